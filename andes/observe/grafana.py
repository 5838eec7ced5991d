"""``andes dashboard push``: provision the generated dashboard in a Grafana server.

Through ``grafana-client`` (maintained; the older ``grafana-api`` package has had no release
since 2020). Two calls at most: find or create the folder by title (``GET``/``POST
/api/folders``), then ``POST /api/dashboards/db`` with ``overwrite`` on, so pushing again
replaces the dashboard (same uid) instead of failing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["push_dashboard"]


def _folder_uid(api: Any, title: str) -> str:
    """The uid of the folder called ``title``, created if there is none."""
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return folder["uid"]
    return api.folder.create_folder(title)["uid"]


def push_dashboard(url: str, dashboard: dict[str, Any], *, token: str | None = None,
                   folder: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """Create or replace ``dashboard`` in the Grafana at ``url``; Grafana's answer (uid, url, version).

    ``token``: a service-account token (else credentials in the URL, ``http://user:pass@host``).
    Raises ``OSError`` saying what failed, for the command to print as one line.
    """
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    payload: dict[str, Any] = {"dashboard": {**dashboard, "id": None}, "overwrite": True,
                               "message": "andes dashboard push"}
    try:
        if folder:
            payload["folderUid"] = _folder_uid(api, folder)
        return api.dashboard.update_dashboard(payload)
    except GrafanaException as exc:
        raise OSError(f"Grafana at {url} refused the dashboard: {exc}") from None
    except Exception as exc:  # connection refused, DNS, TLS: niquests' own errors
        if isinstance(exc, OSError):
            raise
        raise OSError(f"could not reach Grafana at {url}: {exc}") from None

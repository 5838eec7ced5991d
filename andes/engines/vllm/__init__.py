"""The real engine: vLLM, with the Andes policies inside its scheduler.

``scheduler.AndesScheduler`` runs inside vLLM's engine-core process (``scheduler_cls``);
``mapping``, ``rows``, ``report`` and ``settings`` are pure and import no vLLM, so they are testable anywhere. This
package file imports nothing, so ``import andes.engines.vllm`` never pulls in vLLM.
"""

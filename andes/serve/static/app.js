/* The Andes chat page: stream an answer, show it at the reader's pace, plot and score it.
 *
 * Each answer is one streamed /v1/chat/completions request carrying the reader's expectations
 * (ttft, tds), so the server schedules for the same reader this page paces for. Chunks are
 * timed as they arrive; AndesPacer.ReleaseSchedule gives each token its digest time and the
 * page shows it then. window.andesChat.snapshot() exposes the numbers (for tests).
 */
(function () {
  "use strict";
  var P = window.AndesPacer;
  var SPEEDS = {text: 4.8, voice: 3.3};
  var COLORS = {expected: "#9aa0a6", received: "#1a73e8", shown: "#188038", grid: "#e8eaed", ink: "#5f6368"};
  var $ = function (id) { return document.getElementById(id); };
  var messages = [];   // the conversation so far
  var current = null;  // the answer being streamed (or the last one)

  function clock() { return performance.now() / 1000; }

  function settings() {
    var choice = document.querySelector("input[name=speed]:checked").value;
    var tds = choice === "custom" ? Number($("custom-tds").value) : SPEEDS[choice];
    var ttft = Number($("ttft").value), maxTokens = Math.round(Number($("max-tokens").value));
    if (!(tds > 0 && tds <= 1000)) throw new Error("speed: tokens/s in (0, 1000]");
    if (!(ttft > 0 && ttft <= 3600)) throw new Error("first token: seconds in (0, 3600]");
    if (!(maxTokens >= 1)) throw new Error("max tokens: at least 1");
    return {tds: tds, ttft: ttft, maxTokens: maxTokens};
  }

  function bubble(role, text) {
    var div = document.createElement("div");
    div.className = "msg " + role;
    div.appendChild(document.createTextNode(text));
    $("log").appendChild(div);
    $("log").scrollTop = $("log").scrollHeight;
    return div;
  }

  function Answer(prompt, s) {
    this.settings = s;
    this.schedule = new P.ReleaseSchedule(s.ttft, s.tds);
    this.bubble = bubble("assistant", "");
    this.bubble.classList.add("waiting");
    this.textNode = this.bubble.firstChild;
    this.shownAt = [];        // when each token was actually shown (s after sending)
    this.controller = new AbortController();
    this.sent = null;
    this.isReceived = false;  // the stream has ended, normally or not
    this.isDone = false;      // every token has been shown too
    this.report = null;       // the final chunk's andes object
    this.error = null;
    this.timer = null;
    this.refresh = null;      // redraws the live QoE and the plot while the answer runs
    this.streamId = null;     // the chunks' id: what POST v1/reader/{id} names the request by
  }

  /** The reader paused, resumed or changed pace: pace the buffer for it and tell the server,
   * whose engine then schedules for the reader as it is now (docs/design.md, Client buffer). */
  Answer.prototype.setReader = function (tds, paused) {
    if (this.isDone || this.sent === null) return;
    if (!!paused === this.schedule.paused && (tds === null || tds === this.schedule.tds)) return;
    this.schedule.setReader(this.now(), tds, paused);
    if (tds) this.settings.tds = tds;
    if (this.streamId !== null && !this.isReceived) {
      var body = {state: paused ? "paused" : "reading"};
      if (tds) body.tds = tds;
      fetch("v1/reader/" + encodeURIComponent(this.streamId), {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)
      }).catch(function () {});  // the stream may just have ended: nothing to update then
    }
    this.pump();
  };

  Answer.prototype.now = function () { return this.sent === null ? 0 : clock() - this.sent; };

  /** One SSE data payload; returns false when nothing more is expected. */
  Answer.prototype.take = function (data, t) {
    if (data === "[DONE]") return false;
    var event = JSON.parse(data);
    if (event.error) {
      this.error = String(event.error.message || event.error);
      return false;
    }
    if (this.streamId === null && typeof event.id === "string") this.streamId = event.id;
    var choice = event.choices[0];
    var text = choice.text !== undefined && choice.text !== null ? choice.text : (choice.delta || {}).content;
    if (text) this.schedule.receive(text, t);
    if (choice.finish_reason !== null && choice.finish_reason !== undefined) {
      this.report = event.andes || null;
      if (choice.finish_reason !== "stop" && choice.finish_reason !== "length") {
        this.error = "finished with " + choice.finish_reason;
      }
    }
    return true;
  };

  Answer.prototype.read = async function (body) {
    this.sent = clock();
    var response = await fetch("v1/chat/completions", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
      signal: this.controller.signal});
    if (!response.ok) {
      var err = await response.json().catch(function () { return {}; });
      throw new Error("HTTP " + response.status + ": " + ((err.error || {}).message || response.statusText));
    }
    var reader = response.body.getReader(), decoder = new TextDecoder(), pending = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) break;
      var t = this.now();
      var lines = (pending + decoder.decode(part.value, {stream: true})).split("\n");
      pending = lines.pop();
      for (var i = 0; i < lines.length; i++) {
        if (lines[i].indexOf("data:") !== 0) continue;
        if (!this.take(lines[i].slice(5).trim(), t)) { reader.cancel(); return; }
      }
      this.pump();
    }
    if (this.report === null && this.error === null) throw new Error("the stream ended without a final chunk");
  };

  /** Show every token that is due, then wake up when the next one is. */
  Answer.prototype.pump = function () {
    var now = this.now(), due = this.schedule.popDue(now);
    if (due.length) {
      this.bubble.classList.remove("waiting");
      this.textNode.appendData(due.map(function (tok) { return tok.text; }).join(""));
      for (var i = 0; i < due.length; i++) this.shownAt.push(now);
      $("log").scrollTop = $("log").scrollHeight;
    }
    clearTimeout(this.timer);
    var next = this.schedule.nextRelease();
    var self = this;
    if (next !== null && next !== Infinity) this.timer = setTimeout(function () { self.pump(); }, Math.max(0, (next - now) * 1000));
    else if (this.isReceived) this.finish();
    render(this);
  };

  Answer.prototype.finish = function () {
    if (this.isDone) return;
    this.isDone = true;
    clearInterval(this.refresh);
    this.bubble.classList.remove("waiting");
    var line = document.createElement("span");
    line.className = "figures";
    line.textContent = figuresText(this);
    this.bubble.appendChild(line);
    if (this.error) {
      var err = document.createElement("span");
      err.className = "error";
      err.textContent = this.error;
      this.bubble.appendChild(err);
    }
    messages.push({role: "assistant", content: this.textNode.data});
    $("send").disabled = false;
    $("stop").disabled = true;
    render(this);
  };

  function rate(count, span) { return count > 1 && span > 0 ? (count - 1) / span : NaN; }

  function fmt(x, digits, unit) { return isFinite(x) ? x.toFixed(digits) + unit : "-"; }

  /** The client's figures of an answer: TTFT, received and shown pace, QoE. */
  function figures(ans, now) {
    var toks = ans.schedule.tokens, n = toks.length, shown = ans.schedule.numShown;
    return {
      ttft: n ? toks[0].arrival : NaN,
      received: n ? rate(n, toks[n - 1].arrival - toks[0].arrival) : NaN,
      shown: shown ? rate(shown, toks[shown - 1].release - toks[0].release) : NaN,
      buffered: ans.schedule.bufferedSeconds(now),
      held: n - shown,
      qoe: ans.schedule.liveQoe(now)
    };
  }

  function figuresText(ans) {
    var f = figures(ans, ans.now()), r = ans.report;
    return "TTFT " + fmt(f.ttft, 2, " s") + " | received " + fmt(f.received, 1, " tok/s") +
      " | shown " + fmt(f.shown, 1, " tok/s") + " | QoE " + fmt(finalQoe(ans), 3, "") +
      (r && r.qoe !== null ? " (gateway " + r.qoe.toFixed(3) + ")" : "");
  }

  /** The answer's QoE for its reader; one who paused or changed pace is scored in segments. */
  function finalQoe(ans) {
    var s = ans.schedule;
    if (s.hasSegments()) return s.liveQoe(lastTime(ans));
    return P.qoe(s.arrivals(), ans.settings.ttft, ans.settings.tds);
  }

  function render(ans) {
    var now = ans.isDone ? lastTime(ans) : ans.now(), f = figures(ans, now);
    $("qoe-value").textContent = f.qoe.toFixed(3);
    $("qoe-fill").style.width = (100 * f.qoe).toFixed(1) + "%";
    $("fig-ttft").textContent = fmt(f.ttft, 2, " s") + " (expected " + ans.settings.ttft + " s)";
    $("fig-received").textContent = fmt(f.received, 1, " tokens/s");
    $("fig-shown").textContent = fmt(f.shown, 1, " tokens/s") + " (your pace " + ans.settings.tds + ")";
    $("fig-buffer").textContent = f.held + " tokens, " + f.buffered.toFixed(1) + " s of reading";
    $("fig-gateway").textContent = ans.report && ans.report.qoe !== null ? ans.report.qoe.toFixed(3) : "-";
    $("status").textContent = ans.isDone ? (ans.error ? "ended: " + ans.error : "done") : "streaming";
    plot(ans, now);
  }

  function lastTime(ans) {
    var toks = ans.schedule.tokens;
    return toks.length ? toks[toks.length - 1].release : ans.now();
  }

  function staircase(ctx, times, x, y, xEnd) {
    ctx.beginPath();
    ctx.moveTo(x(0), y(0));
    for (var i = 0; i < times.length; i++) {
      ctx.lineTo(x(times[i]), y(i));
      ctx.lineTo(x(times[i]), y(i + 1));
    }
    ctx.lineTo(x(Math.max(xEnd, times.length ? times[times.length - 1] : 0)), y(times.length));
    ctx.stroke();
  }

  function expectedTimes(ans, until) {
    var s = ans.settings, n = ans.isDone ? ans.schedule.tokens.length : s.maxTokens, out = [];
    for (var i = 0; i < n && s.ttft + i / s.tds <= until; i++) out.push(s.ttft + i / s.tds);
    return out;
  }

  function plot(ans, now) {
    var canvas = $("timeline"), ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var expected = expectedTimes(ans, Math.max(now, ans.settings.ttft)), received = ans.schedule.arrivals();
    var shown = ans.schedule.releasesShown();
    var xMax = Math.max(now, ans.settings.ttft + 1, 1) * 1.05;
    var yMax = Math.max(expected.length, received.length, 1) * 1.1;
    var m = {left: 36, right: 8, top: 20, bottom: 26};
    var x = function (t) { return m.left + (w - m.left - m.right) * t / xMax; };
    var y = function (n) { return h - m.bottom - (h - m.top - m.bottom) * n / yMax; };
    axes(ctx, x, y, xMax, yMax, w, h, m);
    ctx.lineWidth = 2;
    ctx.setLineDash([5, 4]);
    ctx.strokeStyle = COLORS.expected;
    staircase(ctx, expected, x, y, Math.max(now, ans.settings.ttft));
    ctx.setLineDash([]);
    ctx.strokeStyle = COLORS.received;
    staircase(ctx, received, x, y, now);
    ctx.strokeStyle = COLORS.shown;
    staircase(ctx, shown, x, y, now);
  }

  function niceStep(span) {
    var raw = span / 5, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
  }

  function axes(ctx, x, y, xMax, yMax, w, h, m) {
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = COLORS.ink;
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1;
    var t, dx = niceStep(xMax), dy = niceStep(yMax);
    for (t = 0; t <= xMax; t += dx) {
      ctx.beginPath(); ctx.moveTo(x(t), y(0)); ctx.lineTo(x(t), m.top); ctx.stroke();
      ctx.fillText(+t.toFixed(2) + "", x(t) - 4, h - m.bottom + 13);
    }
    for (t = 0; t <= yMax; t += dy) {
      ctx.beginPath(); ctx.moveTo(m.left, y(t)); ctx.lineTo(w - m.right, y(t)); ctx.stroke();
      ctx.fillText(+t.toFixed(0) + "", 4, y(t) + 4);
    }
    ctx.fillText("seconds since sent", w / 2 - 40, h - 2);
    ctx.fillText("tokens", 4, 11);
  }

  async function ask(prompt) {
    var s;
    try { s = settings(); } catch (e) { $("status").textContent = e.message; return; }
    bubble("user", prompt);
    messages.push({role: "user", content: prompt});
    var ans = current = new Answer(prompt, s);
    $("send").disabled = true;
    $("stop").disabled = false;
    ans.refresh = setInterval(function () { render(ans); }, 100);
    var body = {messages: messages.slice(), stream: true, ttft: s.ttft, tds: s.tds, max_tokens: s.maxTokens};
    try {
      await ans.read(body);
    } catch (e) {  // HTTP error, dropped connection, Stop: show what arrived, then say why
      ans.error = ans.error || (e.name === "AbortError" ? "stopped" : (e.message || String(e)));
    }
    ans.isReceived = true;
    ans.pump();
  }

  $("ask").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var prompt = $("prompt").value.trim();
    if (!prompt || (current && !current.isDone)) return;
    $("prompt").value = "";
    ask(prompt);
  });
  $("prompt").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").requestSubmit(); }
  });
  $("stop").addEventListener("click", function () {
    if (current && !current.isDone) {
      current.controller.abort();
      current.schedule.tokens.length = current.schedule.numShown;  // drop what is still held
    }
  });

  // A hidden tab is a paused reader; the pause button does the same; a new speed applies at once.
  function readerPaused() { return document.hidden || $("pause").getAttribute("aria-pressed") === "true"; }
  function readerChanged() {
    if (!current || current.isDone) return;
    var tds = null;
    try { tds = settings().tds; } catch (e) { /* an invalid custom speed: keep the pace */ }
    current.setReader(tds, readerPaused());
  }
  document.addEventListener("visibilitychange", readerChanged);
  $("pause").addEventListener("click", function () {
    var pressed = $("pause").getAttribute("aria-pressed") === "true";
    $("pause").setAttribute("aria-pressed", pressed ? "false" : "true");
    $("pause").textContent = pressed ? "Pause" : "Resume";
    readerChanged();
  });
  Array.prototype.forEach.call(document.querySelectorAll("input[name=speed]"), function (el) {
    el.addEventListener("change", readerChanged);
  });
  $("custom-tds").addEventListener("change", readerChanged);

  window.andesChat = {
    /** The numbers of the current (or last) answer, as plain data. */
    snapshot: function () {
      if (!current) return null;
      var toks = current.schedule.tokens;
      return {
        ttft: current.settings.ttft, tds: current.settings.tds, now: current.now(),
        arrivals: toks.map(function (t) { return t.arrival; }),
        releases: toks.map(function (t) { return t.release; }),
        shownAt: current.shownAt.slice(), numShown: current.schedule.numShown,
        text: current.textNode.data, isReceived: current.isReceived, isDone: current.isDone,
        error: current.error, report: current.report, qoeText: $("qoe-value").textContent,
        streamId: current.streamId, paused: current.schedule.paused
      };
    }
  };
})();

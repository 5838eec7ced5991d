/* The client buffer and QoE of Andes in the browser: the same rules as andes/qoe.py.
 *
 * A reader at tds tokens/s digests token i at c_0 = t_0, c_i = max(t_i, c_{i-1} + 1/tds)
 * (t_i: when it arrived, seconds after the request was sent). The page shows token i at c_i,
 * so a server pause shorter than the reading still buffered is invisible
 * (docs/design.md, Client buffer). qoe and liveQoe are line-for-line ports of andes.qoe.qoe
 * and andes.qoe.live_qoe; tests/client/test_page.py checks them against Python in Chromium.
 * No dependencies; exposed as the global AndesPacer.
 */
(function (root) {
  "use strict";

  /** Digest times of tokens arriving at times (andes.qoe.digest_times: c_i = i*L + max_{j<=i}(t_j - j*L)). */
  function digestTimes(times, tds) {
    var step = 1.0 / tds, out = new Array(times.length), lead = -Infinity;
    for (var i = 0; i < times.length; i++) {
      lead = Math.max(lead, times[i] - i * step);
      out[i] = lead + i * step;
    }
    return out;
  }

  /** Final QoE of tokens delivered at times (s after arrival); no token at all scores 0. */
  function qoe(times, ttft, tds) {
    if (times.length === 0) return 0.0;
    var c = digestTimes(times, tds), end = c[c.length - 1], sDelay = 0.0, sWhole = 0.0;
    for (var i = 0; i < c.length; i++) {
      var expected = ttft + i / tds;
      sDelay += Math.max(c[i] - expected, 0.0);
      sWhole += Math.max(end - expected, 0.0);
    }
    if (!(sWhole > 0)) return 1.0;
    return Math.min(Math.max(1.0 - sDelay / sWhole, 0.0), 1.0);
  }

  /** QoE so far at now; a reader who has run dry is charged as if a token arrived at now. */
  function liveQoe(times, ttft, tds, now) {
    if (times.length === 0) return now <= ttft ? 1.0 : 0.0;
    var c = digestTimes(times, tds);
    if (now > c[c.length - 1] + 1.0 / tds) return qoe(times.concat([now]), ttft, tds);
    return qoe(times, ttft, tds);
  }

  /** A chunk's tokens as the simulated engine made them: words with the whitespace before
   * them (andes.client.events.token_pieces); a chunk with no word is one token. */
  function tokenPieces(text) {
    var pieces = text.match(/\s*\S+/g);
    if (!pieces) return [text];
    var rest = text.length - pieces.join("").length;
    if (rest) pieces[pieces.length - 1] += text.slice(text.length - rest);
    return pieces;
  }

  /** Release times of one stream's tokens for one reader (andes.client.pacer.ReleaseSchedule). */
  function ReleaseSchedule(ttft, tds) {
    this.ttft = ttft;
    this.tds = tds;
    this.tokens = [];   // every token received: {index, text, arrival, release}
    this.numShown = 0;  // tokens released to the reader so far
    // A reader who paused or changed pace is scored in segments (andes.qoe.reader): the
    // closed ones' sums, where the current one starts, and when its first token is expected.
    this.paused = false;
    this.base = {delay: 0.0, whole: 0.0};
    this.segStart = 0;
    this.segTtft = ttft;
  }

  /** A chunk's text arrived at t: its tokens, each with its release (digest) time. */
  ReleaseSchedule.prototype.receive = function (text, t) {
    var step = 1.0 / this.tds, out = [];
    tokenPieces(text).forEach(function (piece) {
      var n = this.tokens.length;
      var release = this.paused ? Infinity : n === 0 ? t : Math.max(t, this.tokens[n - 1].release + step);
      var token = {index: n, text: piece, arrival: t, release: release};
      this.tokens.push(token);
      out.push(token);
    }, this);
    return out;
  };

  /** Release every token due at or before now; returns them. */
  ReleaseSchedule.prototype.popDue = function (now) {
    var out = [];
    while (this.numShown < this.tokens.length && this.tokens[this.numShown].release <= now) {
      out.push(this.tokens[this.numShown++]);
    }
    return out;
  };

  /** When the next held token is due (null if none is held). */
  ReleaseSchedule.prototype.nextRelease = function () {
    return this.numShown < this.tokens.length ? this.tokens[this.numShown].release : null;
  };

  /** Seconds of reading held at now (andes.qoe.DigestState.buffered_seconds). */
  ReleaseSchedule.prototype.bufferedSeconds = function (now) {
    var n = this.tokens.length;
    return n === 0 ? 0.0 : Math.max(0.0, this.tokens[n - 1].release + 1.0 / this.tds - now);
  };

  ReleaseSchedule.prototype.arrivals = function () {
    return this.tokens.map(function (tok) { return tok.arrival; });
  };

  ReleaseSchedule.prototype.releasesShown = function () {
    return this.tokens.slice(0, this.numShown).map(function (tok) { return tok.release; });
  };

  /** S_delay and S_whole of the current segment's shown tokens, as if it ended at now. */
  ReleaseSchedule.prototype.segmentSums = function (now) {
    var shown = this.releasesShown().slice(this.segStart), step = 1.0 / this.tds;
    var last = shown.length ? shown[shown.length - 1] : -Infinity;
    if (shown.length ? now > last + step : now > this.segTtft) shown.push(now);  // waiting
    var sDelay = 0.0, sWhole = 0.0;
    for (var i = 0; i < shown.length; i++) {
      var expected = this.segTtft + i * step;
      sDelay += Math.max(shown[i] - expected, 0.0);
      sWhole += Math.max(now - expected, 0.0);
    }
    return {delay: sDelay, whole: sWhole};
  };

  /** The reader paused, resumed or changed pace at now (andes.client.pacer.ReleaseSchedule.set_reader):
   * the past is frozen, held tokens are released from now at the new pace (never while paused). */
  ReleaseSchedule.prototype.setReader = function (now, tds, paused) {
    if (!this.paused) {
      var sums = this.segmentSums(now);
      this.base = {delay: this.base.delay + sums.delay, whole: this.base.whole + sums.whole};
    }
    this.segTtft = this.tokens.length === 0 ? Math.max(this.ttft, now) : now;
    this.segStart = this.numShown;
    this.tds = tds || this.tds;
    this.paused = !!paused;
    for (var i = this.numShown; i < this.tokens.length; i++) {
      this.tokens[i].release = this.paused ? Infinity : now + (i - this.numShown) / this.tds;
    }
  };

  /** Whether the reader ever paused or changed pace (else the one-segment formulas apply). */
  ReleaseSchedule.prototype.hasSegments = function () {
    return this.base.whole !== 0.0 || this.base.delay !== 0.0 || this.segStart !== 0 || this.paused;
  };

  /** QoE of what the reader has been shown by now. */
  ReleaseSchedule.prototype.liveQoe = function (now) {
    if (!this.hasSegments()) return liveQoe(this.releasesShown(), this.ttft, this.tds, now);
    var sums = this.paused ? {delay: 0.0, whole: 0.0} : this.segmentSums(now);
    var whole = this.base.whole + sums.whole;
    return whole > 0 ? Math.min(Math.max(1.0 - (this.base.delay + sums.delay) / whole, 0.0), 1.0) : 1.0;
  };

  root.AndesPacer = {
    digestTimes: digestTimes, qoe: qoe, liveQoe: liveQoe, tokenPieces: tokenPieces,
    ReleaseSchedule: ReleaseSchedule
  };
})(typeof window !== "undefined" ? window : this);

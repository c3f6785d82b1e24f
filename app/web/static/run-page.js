// The run page's script: draws the timeline, replays the run from its event log and follows
// a live run by polling /runs/<id>.json. Text from the run is only ever set with textContent
// or setAttribute, never parsed as markup.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 2000;
  const ROW = 24;
  const LABEL = 210;
  const AXIS = 22;
  const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

  const body = document.body;
  const $ = (id) => document.getElementById(id);
  let view = null;
  let cursor = null; // seconds into the run being shown; null: as it is now
  let playing = false;
  let playFrom = 0;
  let playStart = 0;

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function seconds(value) {
    const s = Math.max(0, Math.round(value));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  // Story and run states at `t` seconds, from the replay's changes.
  function statesAt(t) {
    const stories = {};
    for (const story of view.stories) stories[story.id] = "pending";
    let run = "running";
    for (const change of view.changes) {
      if (change.t > t) break;
      if (change.story === null) run = change.state;
      else stories[change.story] = change.state;
    }
    return { stories, run };
  }

  function currentStates() {
    if (cursor === null) {
      const stories = {};
      for (const story of view.stories) stories[story.id] = story.state;
      return { stories, run: view.state };
    }
    return statesAt(cursor);
  }

  function applyStates(states) {
    for (const node of document.querySelectorAll("#dag .node")) {
      const id = node.getAttribute("data-story");
      const story = view.stories.find((s) => s.id === id);
      const state = states.stories[id] || "pending";
      node.setAttribute("class", "node state-" + state + (story && story.critical ? " critical" : ""));
      const meta = node.querySelector(".meta");
      if (meta && story) meta.textContent = (story.tier || "") + " · " + state;
    }
    const badge = $("run-state");
    badge.className = "badge state-" + states.run;
    badge.textContent = cursor === null ? view.headline : "replay · " + states.run;
    body.setAttribute("data-state", states.run);
  }

  function drawTimeline(t) {
    const chart = $("timeline");
    while (chart.firstChild) chart.removeChild(chart.firstChild);
    const total = Math.max(view.elapsed_s, 1);
    const width = Math.max(640, chart.parentNode.clientWidth - 4);
    const scale = (width - LABEL - 16) / total;
    const height = AXIS + view.stories.length * ROW + 8;
    chart.setAttribute("width", width);
    chart.setAttribute("height", height);
    chart.setAttribute("viewBox", "0 0 " + width + " " + height);
    const x = (s) => LABEL + s * scale;
    const step = STEPS.find((s) => total / s <= 8) || STEPS[STEPS.length - 1];
    for (let s = 0; s <= total; s += step) {
      chart.appendChild(svg("line", { class: "tick", x1: x(s), x2: x(s), y1: AXIS - 4, y2: height }));
      chart.appendChild(svg("text", { class: "axis", x: x(s) + 2, y: AXIS - 8 }, seconds(s)));
    }
    const rows = {};
    view.stories.forEach((story, i) => {
      rows[story.id] = AXIS + i * ROW;
      const y = rows[story.id];
      const cls = story.critical ? "row critical" : "row";
      chart.appendChild(svg("rect", { class: cls, x: 0, y: y, width: width, height: ROW - 2 }));
      const label = svg("text", { class: story.critical ? "rowlabel critical" : "rowlabel", x: 6, y: y + 15 });
      label.appendChild(svg("tspan", { class: "sid" }, story.id + " "));
      label.appendChild(document.createTextNode(story.title.length > 24 ? story.title.slice(0, 23) + "…" : story.title));
      chart.appendChild(label);
    });
    for (const a of view.attempts) {
      const y = rows[a.story];
      const begin = a.queued_s ?? a.started_s;
      if (y === undefined || begin === null || begin > t) continue;
      const end = Math.min(a.finished_s ?? view.elapsed_s, t);
      const started = a.started_s === null ? null : Math.min(a.started_s, end);
      const queuedEnd = started === null ? end : started;
      const tip = a.story + " attempt " + a.attempt + " · " + (a.tier || "?") + " · " + (a.model || "?") +
        " · " + a.tokens.toLocaleString("en") + " tokens · " + a.cost + " · " + a.outcome;
      if (queuedEnd > begin) {
        const bar = svg("rect", { class: "bar queued", x: x(begin), y: y + 4, width: Math.max(1, (queuedEnd - begin) * scale), height: ROW - 10 });
        bar.appendChild(svg("title", {}, tip + " (waiting for a runner)"));
        chart.appendChild(bar);
      }
      if (started !== null) {
        const done = a.finished_s !== null && a.finished_s <= t;
        const outcome = done ? a.outcome : (a.outcome === "unfinished" && t >= view.elapsed_s ? "unfinished" : "running");
        const bar = svg("rect", { class: "bar outcome-" + outcome, x: x(started), y: y + 3, width: Math.max(2, (end - started) * scale), height: ROW - 8, "data-story": a.story, "data-attempt": a.attempt });
        bar.appendChild(svg("title", {}, tip));
        chart.appendChild(bar);
        if ((end - started) * scale > 26) {
          chart.appendChild(svg("text", { class: "barlabel", x: x(started) + 4, y: y + 15 }, "#" + a.attempt));
        }
      }
    }
    if (cursor !== null) {
      chart.appendChild(svg("line", { class: "playhead", x1: x(t), x2: x(t), y1: AXIS - 4, y2: height }));
    }
  }

  function drawAttempts() {
    const tbody = document.querySelector("#attempts tbody");
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    for (const a of view.attempts) {
      const tr = document.createElement("tr");
      const note = [a.failure_kind, a.message].filter(Boolean).join(": ");
      const cells = [a.story, a.attempt, a.tier || "–", a.model || "–", a.tokens.toLocaleString("en"), a.cost, a.duration, null, note];
      cells.forEach((value, i) => {
        const td = document.createElement("td");
        if (i === 0) td.className = "sid";
        if (i >= 4 && i <= 6) td.className = "num";
        if (i === 8) td.className = "note";
        if (value === null) {
          const badge = document.createElement("span");
          badge.className = "badge state-" + a.outcome;
          badge.textContent = a.outcome;
          td.appendChild(badge);
        } else {
          td.textContent = String(value);
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    }
  }

  function drawTotals() {
    const t = view.totals;
    const path = view.critical_path.join(" → ") || "–";
    const values = {
      landed: t.landed + "/" + t.stories,
      failed: t.failed,
      blocked: t.blocked,
      attempts: t.attempts,
      tokens: t.tokens.toLocaleString("en"),
      cost: t.cost,
      wall: t.wall,
      critical: view.critical_bound === "–" ? path : path + " (" + view.critical_bound + ")",
    };
    for (const [key, value] of Object.entries(values)) {
      const dd = document.querySelector('#totals [data-total="' + key + '"]');
      if (dd) dd.textContent = String(value);
    }
  }

  function render() {
    const t = cursor === null ? view.elapsed_s : cursor;
    applyStates(currentStates());
    drawTimeline(t);
    $("clock").textContent = seconds(t) + " / " + seconds(view.elapsed_s);
    $("scrub").value = String(Math.round((1000 * t) / Math.max(view.elapsed_s, 0.001)));
    $("live").textContent = view.live ? "● live" : "";
    $("play").textContent = playing ? "❚❚ Pause" : "▶ Replay";
    body.setAttribute("data-cursor", cursor === null ? "live" : cursor.toFixed(2));
  }

  function tick(now) {
    if (!playing) return;
    const speed = Number($("speed").value) || 1;
    const t = playFrom + ((now - playStart) / 1000) * speed;
    if (t >= view.elapsed_s) {
      playing = false;
      cursor = null;
    } else {
      cursor = t;
      window.requestAnimationFrame(tick);
    }
    render();
  }

  function play() {
    if (playing) {
      playing = false;
      render();
      return;
    }
    playFrom = cursor === null || cursor >= view.elapsed_s ? 0 : cursor;
    cursor = playFrom;
    playing = true;
    playStart = performance.now();
    render();
    window.requestAnimationFrame(tick);
  }

  function scrub() {
    playing = false;
    const t = (Number($("scrub").value) / 1000) * view.elapsed_s;
    cursor = t >= view.elapsed_s ? null : t;
    render();
  }

  function changeSpeed() {
    if (playing) {
      playFrom = cursor === null ? 0 : cursor;
      playStart = performance.now();
    }
  }

  async function refresh() {
    try {
      const response = await fetch(body.dataset.json, { cache: "no-store", credentials: "omit" });
      if (response.ok) {
        const fresh = await response.json();
        const changed = !view || fresh.version !== view.version || fresh.live;
        view = fresh;
        if (changed) {
          drawAttempts();
          drawTotals();
          render();
        }
      }
    } catch (error) {
      // offline for a moment: try again at the next poll
    }
    if (!view || view.live) window.setTimeout(refresh, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("play").addEventListener("click", play);
    $("scrub").addEventListener("input", scrub);
    $("speed").addEventListener("change", changeSpeed);
    window.addEventListener("resize", () => view && render());
    refresh();
  });
})();

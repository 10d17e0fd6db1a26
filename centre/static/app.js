// The staff console: login, navigation, live alarms, gateways. Plain JavaScript, no build step,
// nothing from the internet. Every value from the server is set with textContent (never parsed
// as HTML): a household's name or note may hold anything.
//
// Parts in their own files (the broadcast composer, the admin pages) define
//   window.OkBroadcast = { mount(el, ctx) }   window.OkAdmin = { mount(el, ctx) }
// and are mounted into their tab's pane with ctx = { api, t, user, live, lang }:
//   api(method, path, body), or api.get(path) / api.post(path, body) / api.put / api.patch /
//     api.del(path): a promise of the parsed JSON (null for 204); JSON bodies, or a
//     FormData/Blob/string as given; X-CSRF-Token on every state change; rejects with ApiError
//     {status, detail (text), message}; a 401 returns the page to its login.
//   t(key, vars): the text of key in the current language (window.OK_I18N), {name} filled.
//   user: {username, display_name, role, ...} as GET /api/session gives it.
//   live.on(topic, fn) -> off(): fn(data) for each change pushed by the centre
//     ("alarm", "escalation", "broadcast", "gateway", ... and "reconnected" after the stream
//     came back, when a pane should reload what it shows).
//   lang: the current language ("zh-CN" or "en").
// mount may return {unmount()}; on a language switch the page unmounts and mounts again.
"use strict";
(function () {
  const I18N = window.OK_I18N || {};
  const LANGS = ["zh-CN", "en"];
  const STORE_LANG = "onekey.lang";
  const BEEP_EVERY_MS = 1600;
  const RECENT_LIMIT = 200;
  const CLOSED_SHOWN = 30;
  const TESTS_SHOWN = 20;
  const GATEWAY_POLL_MS = 30000;

  // ---- language

  let lang = localStorage.getItem(STORE_LANG);
  if (!LANGS.includes(lang)) lang = "zh-CN";

  function t(key, vars) {
    const dict = I18N[lang] || {};
    let text = dict[key];
    if (text === undefined) text = (I18N["zh-CN"] || {})[key];
    if (text === undefined) return key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined || vars[k] === null ? "" : String(vars[k])));
    return text;
  }

  // A label for a code from the server: translated when the dictionary knows it, else as is.
  function label(prefix, code) {
    const key = prefix + "." + code;
    const text = t(key);
    return text === key ? String(code) : text;
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return t("time.never");
    const at = typeof ms === "number" ? new Date(ms) : new Date(ms);
    if (isNaN(at.getTime())) return String(ms);
    return at.toLocaleString(lang, { hour12: false });
  }

  function applyStatic() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    updateTitle();
  }

  // ---- DOM helpers (text only)

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);

  // ---- API

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  let csrf = null;

  function detailText(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((e) => ((e.loc || []).slice(1).join(".") + ": " + e.msg)).join("; ");
    }
    return "HTTP " + status;
  }

  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    let payload;
    if (body !== undefined && body !== null) {
      if (body instanceof FormData || body instanceof Blob || typeof body === "string") payload = body;
      else { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
    }
    if (method !== "GET" && method !== "HEAD" && csrf) headers["X-CSRF-Token"] = csrf;
    let r;
    try {
      r = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      throw new ApiError(0, t("error.unreachable", { detail: e.message }));
    }
    if (r.status === 204) return null;
    let data = null;
    const type = r.headers.get("Content-Type") || "";
    if (type.includes("json")) { try { data = await r.json(); } catch (e) { data = null; } }
    else if (r.ok) return await r.text();
    if (r.status === 401 && path !== "/api/session") {
      sessionLost();
      throw new ApiError(401, t("login.expired"));
    }
    if (!r.ok) throw new ApiError(r.status, detailText(data, r.status));
    return data;
  }

  // api(method, path, body), with shorthands api.get(path), api.post(path, body), ...
  const api = (method, path, body) => request(method, path, body);
  Object.assign(api, {
    request,
    get: (p) => request("GET", p),
    post: (p, b) => request("POST", p, b === undefined ? {} : b),
    put: (p, b) => request("PUT", p, b),
    patch: (p, b) => request("PATCH", p, b),
    del: (p) => request("DELETE", p),
    ApiError,
  });

  // ---- live changes (server-sent events)

  const listeners = new Map();
  const live = {
    on(topic, fn) {
      if (!listeners.has(topic)) listeners.set(topic, new Set());
      listeners.get(topic).add(fn);
      return () => listeners.get(topic).delete(fn);
    },
  };
  function emit(topic, data) {
    for (const fn of listeners.get(topic) || []) {
      try { fn(data); } catch (e) { console.error("listener of", topic, e); }
    }
  }

  let source = null;
  let lastHeard = 0;
  let heartbeatMs = 10000;
  let wasDown = false;
  let watchdog = null;
  let retryTimer = null;

  function setLive(up) {
    const banner = $("live-banner");
    $("live-dot").className = "dot " + (up ? "live" : "down");
    $("live-dot").title = t(up ? "live.connected" : "live.lost");
    window.__okLive = up;
    if (!up) {
      banner.textContent = t("live.lost");
      banner.className = "banner";
      banner.hidden = false;
      wasDown = true;
    } else if (wasDown) {
      banner.textContent = t("live.back");
      banner.className = "banner ok";
      banner.hidden = false;
      setTimeout(() => { if (window.__okLive) banner.hidden = true; }, 3000);
    } else {
      banner.hidden = true;
    }
  }

  function connectLive() {
    closeLive();
    const es = new EventSource("/api/stream");
    source = es;
    lastHeard = Date.now();
    es.addEventListener("hello", (ev) => {
      lastHeard = Date.now();
      const hello = JSON.parse(ev.data);
      if (hello.heartbeat_s) heartbeatMs = hello.heartbeat_s * 1000;
      // Whatever changed while the stream was down is read again now.
      const again = wasDown;
      setLive(true);
      wasDown = false;
      reloadState();
      if (again) emit("reconnected", {});
    });
    es.addEventListener("ping", () => { lastHeard = Date.now(); });
    for (const topic of ["alarm", "escalation", "broadcast", "gateway", "device", "modem"]) {
      es.addEventListener(topic, (ev) => {
        lastHeard = Date.now();
        let data;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        emit(topic, data);
      });
    }
    es.onerror = () => {
      if (source !== es) return;
      setLive(false);
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. the session ended) rather than cut: ask whether we are still in.
        retryTimer = setTimeout(async () => {
          try { await api.get("/api/session"); connectLive(); } catch (e) {
            if (e.status !== 401) retryTimer = setTimeout(connectLive, 2000);
          }
        }, 1000);
      }
    };
    watchdog = setInterval(() => {
      // A stream that says nothing, not even its ping, is dead although not closed.
      if (Date.now() - lastHeard > heartbeatMs * 2.5) { setLive(false); connectLive(); }
    }, 1000);
  }

  function closeLive() {
    if (source) { source.close(); source = null; }
    clearInterval(watchdog);
    clearTimeout(retryTimer);
  }

  // ---- sound (Web Audio, generated: no file) and notifications

  let audio = null;
  let beepTimer = null;
  window.__okAlarmSounding = false;
  window.__okBeeps = 0;
  window.__okNotifications = 0;

  function audioContext() {
    if (!audio) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return null;
      audio = new Ctx();
    }
    return audio;
  }

  function unlockAudio() {
    // Browsers start sound only after a gesture: every click tries, the button says so.
    const ctx = audioContext();
    if (ctx && ctx.state !== "running") ctx.resume().then(updateSoundButton, updateSoundButton);
    if (window.Notification && Notification.permission === "default") {
      try { Notification.requestPermission(); } catch (e) { /* old API: ignore */ }
    }
  }

  function updateSoundButton() {
    const ctx = audio;
    $("sound-enable").hidden = !(ctx && ctx.state !== "running" && beepTimer);
  }

  function beep() {
    const ctx = audioContext();
    if (!ctx) return;
    if (ctx.state !== "running") { ctx.resume().catch(() => {}); updateSoundButton(); return; }
    const now = ctx.currentTime;
    // Two tones, high then low, as alarm panels do: heard over a room, unlike a chime.
    for (const [i, freq] of [[0, 988], [1, 740], [2, 988], [3, 740]]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + i * 0.2);
      gain.gain.exponentialRampToValueAtTime(0.25, now + i * 0.2 + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.2 + 0.19);
      osc.connect(gain).connect(ctx.destination);
      osc.start(now + i * 0.2);
      osc.stop(now + i * 0.2 + 0.2);
    }
    window.__okBeeps += 1;
  }

  function updateSound(openCount) {
    if (openCount > 0 && !beepTimer) {
      beep();
      beepTimer = setInterval(beep, BEEP_EVERY_MS);
    } else if (openCount === 0 && beepTimer) {
      clearInterval(beepTimer);
      beepTimer = null;
    }
    window.__okAlarmSounding = beepTimer !== null;
    updateSoundButton();
  }

  function notify(alarm) {
    if (!window.Notification || Notification.permission !== "granted") return;
    const card = cards.get(alarm.household);
    const who = (card && card.name) || alarm.household || alarm.device;
    try {
      const n = new Notification(t("notify.title", { who }), {
        body: t("notify.body", { village: villageText(alarm, card), address: (card && card.address) || "", time: fmtTime(alarm.received_at) }),
        tag: "onekey-" + alarm.id,
        requireInteraction: true,
      });
      n.onclick = () => { window.focus(); showPane("alarms"); select(alarm.id); n.close(); };
      window.__okNotifications += 1;
    } catch (e) { /* a browser that allows only service-worker notifications: the sound and title remain */ }
  }

  // ---- state

  let user = null;
  const alarms = new Map(); // id -> event as GET /api/alarms/{id}
  const cards = new Map(); // household id -> card | null (unknown) ; absent: not loaded
  const cardLoads = new Map();
  let outcomes = [];
  let selected = null;
  let loadedOnce = false;
  let gateways = [];

  const ACTIVE = ["open", "acked", "dispatched"];
  const isAlarm = (a) => a.kind === "alarm";
  const openAlarms = () => [...alarms.values()].filter((a) => isAlarm(a) && a.state === "open");

  function updateTitle() {
    const n = user ? openAlarms().length : 0;
    document.title = (n ? "(" + n + ") " : "") + t("app.title");
    const badge = $("open-count");
    badge.textContent = String(n);
    badge.hidden = n === 0;
    window.__okOpenCount = n;
  }

  async function loadCard(household) {
    if (!household) return null;
    if (cards.has(household)) return cards.get(household);
    if (!cardLoads.has(household)) {
      cardLoads.set(household, (async () => {
        try {
          const card = await api.get("/api/households/" + encodeURIComponent(household));
          cards.set(household, card);
        } catch (e) {
          if (e.status === 404) cards.set(household, null);
          else { cardLoads.delete(household); throw e; }
        }
        cardLoads.delete(household);
        return cards.get(household);
      })());
    }
    return cardLoads.get(household);
  }

  function upsert(a, fromPush) {
    if (!a || !a.id) return;
    if (a.kind === "cancel") {
      // A cancel names the alarm it cancels: read that alarm's new state.
      if (a.ref) api.get("/api/alarms/" + encodeURIComponent(a.ref)).then((x) => upsert(x, false), () => {});
      return;
    }
    const before = alarms.get(a.id);
    alarms.set(a.id, a);
    const fresh = !before && isAlarm(a) && a.state === "open";
    if (a.household && !cards.has(a.household)) {
      loadCard(a.household).then(() => { renderLists(); if (selected === a.id) renderDetail(); if (fresh && fromPush) notify(a); }, () => {});
    } else if (fresh && fromPush) {
      notify(a);
    }
    if (fresh && fromPush) window.__okLastAlarmShownAt = Date.now();
  }

  // Pushes that arrive while the lists are being read again: applied on top of what was read
  // (which may predate them), in their order.
  let pushedDuringReload = null;

  async function reloadState() {
    pushedDuringReload = [];
    try {
      const lists = await Promise.all([
        api.get("/api/alarms?limit=" + RECENT_LIMIT),
        ...ACTIVE.map((s) => api.get("/api/alarms?kind=alarm&limit=1000&state=" + s).catch((e) => {
          if (e.status === 422) return []; // a state this centre does not know
          throw e;
        })),
      ]);
      alarms.clear();
      rows.clear();
      for (const list of lists) for (const a of list) upsert(a, false);
      for (const a of pushedDuringReload) upsert(a, false);
      if (!outcomes.length) api.get("/api/alarm-outcomes").then((o) => { outcomes = o || []; renderDetail(); }, () => {});
      loadedOnce = true;
      $("error").textContent = "";
      render();
      if (selected) refreshDetailData(selected);
    } catch (e) {
      if (e.status !== 401) $("error").textContent = e.message;
    } finally {
      pushedDuringReload = null;
    }
    loadGateways();
    loadModem();
  }

  // ---- rendering: alarms

  function villageText(a, card) {
    if (card) return [card.village, card.group].filter((x) => x).join(" · ") || a.village;
    return a.village;
  }

  // Rows are built again only when what they show changed: a push then touches one row, not
  // every row of every list (a desk may keep a console open all day).
  const rows = new Map(); // alarm id -> {key, li}

  function alarmItem(a) {
    const card = cards.get(a.household);
    const key = [a.state, a.received_at, selected === a.id, lang, card === undefined ? "?" : card === null ? "-"
      : [card.name, card.village, card.group, card.address].join("\u0000")].join("\u0001");
    const cached = rows.get(a.id);
    if (cached && cached.key === key) return cached.li;
    const li = buildItem(a, card);
    rows.set(a.id, { key, li });
    return li;
  }

  function buildItem(a, card) {
    const who = card ? card.name || a.household : card === null ? t("card.unknown", { id: a.household }) : a.household || a.device;
    const li = el("li", {
      class: "alarm-item st-" + a.state + (selected === a.id ? " selected" : ""),
      tabindex: "0", "data-id": a.id, role: "button",
      onclick: () => select(a.id),
      onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(a.id); } },
    },
      el("div", { class: "line1" }, el("span", { class: "who", text: who }), el("span", { class: "badge st-" + a.state, text: label("state", a.state) })),
      el("div", { class: "line2", text: [villageText(a, card), card && card.address, fmtTime(a.received_at)].filter((x) => x).join(" · ") }),
    );
    return li;
  }

  function fillList(id, items) {
    const ul = $(id);
    // Only the rows that are new, gone or moved touch the document.
    let cur = ul.firstElementChild;
    for (const li of items.map(alarmItem)) {
      if (cur === li) { cur = cur.nextElementSibling; continue; }
      ul.insertBefore(li, cur);
    }
    while (cur) { const next = cur.nextElementSibling; cur.remove(); cur = next; }
    $(id + "-none").hidden = items.length > 0;
  }

  function renderLists() {
    const all = [...alarms.values()];
    const byNewest = (x, y) => y.received_at - x.received_at;
    const active = all.filter((a) => isAlarm(a) && ACTIVE.includes(a.state));
    // Open first (oldest open at the top: it has waited longest), then the others, newest first.
    active.sort((x, y) => (x.state === "open") !== (y.state === "open") ? (x.state === "open" ? -1 : 1)
      : x.state === "open" ? x.received_at - y.received_at : byNewest(x, y));
    const tests = all.filter((a) => a.kind === "test").sort(byNewest).slice(0, TESTS_SHOWN);
    const closed = all.filter((a) => isAlarm(a) && !ACTIVE.includes(a.state)).sort(byNewest).slice(0, CLOSED_SHOWN);
    fillList("alarms-active", active);
    fillList("alarms-tests", tests);
    fillList("alarms-closed", closed);
    // What no list shows any more is forgotten: a console left open for weeks stays small.
    if (alarms.size > active.length + tests.length + closed.length + 50) {
      const keep = new Set([...active, ...tests, ...closed].map((a) => a.id));
      for (const id of [...alarms.keys()]) if (!keep.has(id) && id !== selected) { alarms.delete(id); rows.delete(id); }
    }
    const open = openAlarms().length;
    updateTitle();
    updateSound(open);
  }

  // Detail of the selected alarm: its card, actions, timeline and escalation.
  const detailData = { id: null, timeline: null, escalation: null };

  function select(id) {
    selected = id;
    detailData.id = id;
    detailData.timeline = null;
    detailData.escalation = null;
    renderLists();
    renderDetail();
    refreshDetailData(id);
    if (window.matchMedia("(max-width: 899px)").matches) $("alarm-detail").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  async function refreshDetailData(id) {
    const a = alarms.get(id);
    const [timeline, escalation] = await Promise.all([
      api.get("/api/alarms/" + encodeURIComponent(id) + "/timeline").catch(() => null),
      api.get("/api/alarms/" + encodeURIComponent(id) + "/escalation").catch(() => null),
      a ? loadCard(a.household).catch(() => null) : null,
    ]);
    if (selected !== id) return;
    detailData.timeline = timeline;
    detailData.escalation = escalation;
    renderDetail();
  }

  function field(dl, key, value, cls) {
    if (value === null || value === undefined || value === "") return;
    dl.appendChild(el("dt", { text: t(key) }));
    const dd = el("dd", { class: cls });
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = String(value);
    dl.appendChild(dd);
  }

  function phoneLink(phone) {
    return el("a", { href: "tel:" + String(phone).replace(/[^0-9+]/g, ""), text: phone });
  }

  function renderCard(a) {
    const box = el("section", { class: "household" }, el("h3", { text: t("card.title") }));
    const card = cards.get(a.household);
    if (card === undefined) { box.appendChild(el("p", { class: "empty", text: t("card.loading") })); return box; }
    if (card === null) { box.appendChild(el("p", { class: "empty", text: t("card.unknown", { id: a.household }) })); return box; }
    const dl = el("dl", { class: "card" });
    field(dl, "card.name", card.name);
    field(dl, "card.address", card.address);
    field(dl, "card.village", [card.village, card.group].filter((x) => x).join(" · "));
    if (card.phone) field(dl, "card.phone", phoneLink(card.phone));
    field(dl, "card.medical", card.medical, "medical");
    field(dl, "card.language", card.language_notes);
    field(dl, "card.notes", card.notes);
    if (card.lat !== null && card.lat !== undefined && card.lon !== null && card.lon !== undefined) {
      field(dl, "card.coords", Number(card.lat).toFixed(5) + ", " + Number(card.lon).toFixed(5));
    }
    const contacts = Array.isArray(card.contacts) ? [...card.contacts] : [];
    if (contacts.length) {
      contacts.sort((x, y) => (x.position || 0) - (y.position || 0));
      const ol = el("ol", { class: "contacts" });
      for (const c of contacts) {
        ol.appendChild(el("li", {},
          el("span", { class: "badge", text: label("contact", c.kind) }), " ",
          el("span", { text: [c.name, c.relation].filter((x) => x).join(" · ") }), " ",
          c.phone ? phoneLink(c.phone) : null));
      }
      field(dl, "card.contacts", ol);
    }
    box.appendChild(dl);
    return box;
  }

  function displayName() { return (user && (user.display_name || user.username)) || ""; }

  async function act(button, path, body, errorBox) {
    button.disabled = true;
    errorBox.textContent = "";
    try {
      const updated = await api.post(path, body);
      if (updated && updated.id) upsert(updated, false);
      renderLists();
      await refreshDetailData(selected);
    } catch (e) {
      errorBox.textContent = t("act.failed", { detail: e.message });
      button.disabled = false;
    }
  }

  function renderActions(a) {
    const box = el("section", { class: "actions" });
    const err = el("p", { class: "error", role: "alert" });
    const base = "/api/alarms/" + encodeURIComponent(a.id);
    if (a.acked_at) box.appendChild(el("p", { class: "done", text: t("act.done.acked", { who: a.acked_by, time: fmtTime(a.acked_at) }) }));
    if (a.acked_note) box.appendChild(el("p", { class: "done", text: a.acked_note }));
    if (a.dispatched_at) box.appendChild(el("p", { class: "done", text: t("act.done.dispatched", { who: a.dispatched_to, time: fmtTime(a.dispatched_at) }) }));
    if (a.dispatched_note) box.appendChild(el("p", { class: "done", text: a.dispatched_note }));
    if (a.resolved_at) {
      box.appendChild(el("p", { class: "done", text: t("act.done.resolved", { time: fmtTime(a.resolved_at), outcome: outcomeLabel(a.outcome) }) }));
      if (a.resolved_note) box.appendChild(el("p", { class: "done", text: a.resolved_note }));
    }
    if (a.cancelled_at && a.state !== "cancelled") box.appendChild(el("p", { class: "error", text: t("act.cancelled_later", { time: fmtTime(a.cancelled_at) }) }));
    if (a.kind !== "alarm") return box;
    if (a.state === "open") {
      const note = el("input", { id: "ack-note", maxlength: "200", placeholder: t("act.ack.note.placeholder") });
      const b = el("button", { id: "ack", type: "button", text: t("act.ack", { name: displayName() }) });
      b.addEventListener("click", () => act(b, base + "/ack", { note: note.value.trim(), by: displayName() }, err));
      box.appendChild(el("div", { class: "row" }, el("label", {}, t("act.note"), note), b));
    }
    if (ACTIVE.includes(a.state)) {
      const who = el("input", { id: "dispatch-responder", maxlength: "64", placeholder: t("act.responder.placeholder") });
      const note = el("input", { id: "dispatch-note", maxlength: "1000" });
      const b = el("button", { id: "dispatch", type: "button", text: t("act.dispatch") });
      b.addEventListener("click", () => act(b, base + "/dispatch", { responder: who.value.trim(), note: note.value.trim() }, err));
      box.appendChild(el("div", { class: "row" }, el("label", {}, t("act.responder"), who), el("label", {}, t("act.note"), note), b));
    }
    if (ACTIVE.includes(a.state)) {
      const sel = el("select", { id: "resolve-outcome" }, el("option", { value: "", text: t("act.outcome.choose") }));
      for (const o of outcomes) sel.appendChild(el("option", { value: o.id, text: outcomeLabel(o.id) }));
      const note = el("input", { id: "resolve-note", maxlength: "1000" });
      const b = el("button", { id: "resolve", type: "button", text: t("act.resolve") });
      b.addEventListener("click", () => {
        if (!sel.value) { err.textContent = t("act.outcome.choose"); return; }
        act(b, base + "/resolve", { outcome: sel.value, note: note.value.trim() }, err);
      });
      box.appendChild(el("div", { class: "row" }, el("label", {}, t("act.outcome"), sel), el("label", {}, t("act.note"), note), b));
    }
    box.appendChild(err);
    return box;
  }

  function outcomeLabel(id) {
    const o = outcomes.find((x) => x.id === id);
    if (!o) return id || "";
    return lang === "en" ? o.en || o.zh || id : o.zh || o.en || id;
  }

  function detailString(d) {
    if (d === null || d === undefined || d === "") return "";
    if (typeof d !== "object") return String(d);
    const parts = [];
    for (const [k, v] of Object.entries(d)) {
      if (v === null || v === undefined || v === "" || typeof v === "object") continue;
      if (k === "message" || k === "round" || k === "alarm") continue; // ids and counters
      if (k === "outcome") parts.push(outcomeLabel(v));
      else if (k === "kind") parts.push(t("contact." + v) !== "contact." + v ? label("contact", v) : label("kind", v));
      else if (k === "state") parts.push(label("esc.state", v));
      else if (k === "step") parts.push(t("esc.step", { n: v }));
      else parts.push(String(v));
    }
    return parts.join(" · ");
  }

  function renderTimeline() {
    const box = el("section", {}, el("h3", { text: t("timeline.title") }));
    const rows = Array.isArray(detailData.timeline) ? detailData.timeline : [];
    if (!rows.length) { box.appendChild(el("p", { class: "empty", text: t("timeline.none") })); return box; }
    const ol = el("ol", { class: "timeline", id: "timeline" });
    for (const r of rows) {
      ol.appendChild(el("li", { class: "k-" + r.kind, "data-kind": r.kind },
        el("time", { text: fmtTime(r.at) }),
        el("span", { class: "what", text: label("tl", r.kind) }),
        r.actor ? el("span", { class: "actor", text: " · " + label("actor", r.actor) }) : null,
        detailString(r.detail) ? el("span", { class: "detail", text: " · " + detailString(r.detail) }) : null));
    }
    box.appendChild(ol);
    return box;
  }

  // The state of one SMS of the chain, most telling first.
  function messageState(m) {
    if (m.confirmed_at) return "confirmed";
    if (m.timed_out_at) return "timeout";
    if (m.state === "failed") return "failed";
    if (m.delivery === "delivered") return "delivered";
    if (m.delivery === "undelivered") return "undelivered";
    return m.state || "pending";
  }

  // The escalation chain (GET /api/alarms/{id}/escalation): its state, each SMS sent step by
  // step with what became of it, and the contacts still to come.
  function renderEscalation() {
    const e = detailData.escalation;
    if (!e || typeof e !== "object" || !e.state) return null;
    const head = el("h3", {}, t("esc.title"), " ",
      el("span", { class: "badge esc-" + e.state, id: "escalation-state", "data-state": e.state, text: label("esc.chain", e.state) }));
    const box = el("section", { class: "escalation-box" }, head);
    const facts = [];
    if (e.state === "waiting" && e.starts_at) facts.push(t("esc.starts_at", { time: fmtTime(e.starts_at) }));
    if (e.state === "running" && e.step) facts.push(t("esc.at_step", { round: e.round, step: e.step }));
    if (e.state === "running" && e.step_due) facts.push(t("esc.step_due", { time: fmtTime(e.step_due) }));
    if (e.confirmed_by) facts.push(t("esc.confirmed_by", { who: [label("contact", e.confirmed_by.kind), e.confirmed_by.name].filter((x) => x).join(" ") }));
    if (e.end_reason && e.state !== "confirmed") facts.push(String(e.end_reason));
    if (facts.length) box.appendChild(el("p", { class: "meta", text: facts.join(" · ") }));
    const ol = el("ol", { class: "escalation", id: "escalation" });
    const messages = Array.isArray(e.messages) ? e.messages : [];
    for (const m of messages) {
      const st = messageState(m);
      ol.appendChild(el("li", { class: "es-" + st, "data-state": st, "data-step": m.step + 1 },
        el("span", { class: "n", text: t("esc.step", { n: m.step + 1 }) }),
        m.kind ? el("span", { class: "badge", text: label("contact", m.kind) }) : null,
        el("span", { class: "name", text: [m.name, m.relation].filter((x) => x).join(" · ") }),
        m.phone ? phoneLink(m.phone) : null,
        el("strong", { class: "state", text: label("esc.state", st) }),
        el("time", { text: fmtTime(m.confirmed_at || m.timed_out_at || m.delivered_at || m.sent_at || m.created_at) }),
        m.error ? el("span", { class: "detail", text: String(m.error) }) : null));
    }
    // The contacts of the steps not reached yet in this round.
    const steps = Array.isArray(e.steps) ? e.steps : [];
    if (e.state === "running" || e.state === "waiting") {
      const reached = e.state === "running" && e.step ? e.step : 0;
      steps.forEach((contacts, i) => {
        if (i + 1 <= reached) return;
        for (const c of contacts || []) {
          ol.appendChild(el("li", { class: "es-pending", "data-state": "pending", "data-step": i + 1 },
            el("span", { class: "n", text: t("esc.step", { n: i + 1 }) }),
            c.kind ? el("span", { class: "badge", text: label("contact", c.kind) }) : null,
            el("span", { class: "name", text: [c.name, c.relation].filter((x) => x).join(" · ") }),
            el("strong", { class: "state", text: label("esc.state", "pending") })));
        }
      });
    }
    if (ol.childNodes.length) box.appendChild(ol);
    return box;
  }

  function renderDetail() {
    const box = $("alarm-detail");
    const a = selected ? alarms.get(selected) : null;
    if (!a) { box.replaceChildren(el("p", { class: "empty", text: t("alarms.select") })); return; }
    // Keep what staff are typing across a live re-render.
    const typed = {};
    for (const input of box.querySelectorAll("input[id], select[id]")) typed[input.id] = input.value;
    const card = cards.get(a.household);
    box.replaceChildren(...[
      el("h2", {}, el("span", { class: "badge st-" + a.state, text: label("state", a.state) }), " ",
        el("span", { id: "detail-who", text: (card && card.name) || a.household || a.device })),
      el("p", { class: "meta", text: [label("kind", a.kind), villageText(a, card), t("alarms.received") + " " + fmtTime(a.received_at),
        t("alarms.device") + " " + a.device, t("alarms.id") + " " + a.id].join(" · ") }),
      renderActions(a),
      renderCard(a),
      renderEscalation(),
      renderTimeline(),
    ].filter((x) => x));
    for (const [id, v] of Object.entries(typed)) { const input = $(id); if (input) input.value = v; }
  }

  function render() {
    renderLists();
    renderDetail();
    renderGateways();
  }

  // ---- gateways

  let gatewayTimer = null;
  let gatewayLoading = false;
  async function loadGateways() {
    if (gatewayLoading) return;
    gatewayLoading = true;
    try { gateways = await api.get("/api/gateways"); renderGateways(); } catch (e) { /* shown by the banner or the login */ }
    finally { gatewayLoading = false; }
  }
  // Heartbeats of many gateways: read the table at most every 2 s.
  let gatewayDue = null;
  function gatewayChanged() {
    if (gatewayDue) return;
    gatewayDue = setTimeout(() => { gatewayDue = null; loadGateways(); }, 2000);
  }

  function renderGateways() {
    const body = $("gateways");
    body.replaceChildren();
    let offline = 0;
    for (const g of gateways) {
      if (!g.online) offline += 1;
      const cells = [
        ["gw.name", g.name ? g.name + " (" + g.id + ")" : g.id],
        ["gw.status", t(g.online ? "gw.online" : "gw.offline"), g.online ? "online" : "offline"],
        ["gw.last_seen", g.last_seen ? fmtTime(g.last_seen) : t("gw.never")],
        ["gw.outbox", g.outbox === null || g.outbox === undefined || g.outbox < 0 ? "—" : g.outbox],
        ["gw.devices", g.devices === null || g.devices === undefined ? "—" : g.devices],
        ["gw.villages", (g.reported_villages || g.villages || []).join(", ")],
      ];
      body.appendChild(el("tr", { "data-gw": g.id }, ...cells.map(([k, v, cls]) => el("td", { "data-label": t(k), class: cls, text: v }))));
    }
    $("gateways-none").hidden = gateways.length > 0;
    const badge = $("gw-offline");
    badge.textContent = String(offline);
    badge.title = t("gw.offline_count", { n: offline });
    badge.hidden = offline === 0;
  }

  // ---- the SMS modem (escalation): an alert when it is not there

  let modem = null;
  function showModem(m) {
    modem = m;
    const banner = $("modem-banner");
    if (!m || !m.alert) { banner.hidden = true; return; }
    banner.textContent = t("modem.alert", { state: label("modem.state", m.state), detail: m.detail || "" });
    banner.hidden = false;
  }

  async function loadModem() {
    try { showModem(await api.get("/api/modem")); } catch (e) { /* no escalation on this centre */ }
  }

  // ---- panes

  const mounted = {};
  function ctx() { return { api, t, user, live, lang }; }

  function mountPart(name, global) {
    const pane = $("pane-" + name);
    const part = window[global];
    if (mounted[name] && mounted[name].unmount) { try { mounted[name].unmount(); } catch (e) { console.error(e); } }
    pane.replaceChildren();
    if (part && typeof part.mount === "function") {
      try { mounted[name] = part.mount(pane, ctx()) || {}; } catch (e) {
        console.error(name, e);
        pane.replaceChildren(el("p", { class: "error", text: String(e.message || e) }));
      }
    } else {
      mounted[name] = {};
      pane.appendChild(el("p", { class: "placeholder", text: t("pane.missing") }));
    }
  }

  function showPane(name) {
    for (const b of document.querySelectorAll("#tabs [data-pane]")) {
      const on = b.dataset.pane === name;
      b.setAttribute("aria-selected", on ? "true" : "false");
      $("pane-" + b.dataset.pane).hidden = !on;
    }
    if (name === "gateways") loadGateways();
    location.hash = name;
  }

  // ---- session

  function showLogin(message) {
    closeLive();
    updateSound(0);
    user = null;
    csrf = null;
    alarms.clear();
    cards.clear();
    rows.clear();
    selected = null;
    $("console").hidden = true;
    $("login").hidden = false;
    $("live-banner").hidden = true;
    $("modem-banner").hidden = true;
    $("login-error").textContent = message || "";
    updateTitle();
    $("login-username").focus();
  }

  function sessionLost() {
    if (user) showLogin(t("login.expired"));
  }

  function startConsole(session) {
    user = session.user || session;
    csrf = session.csrf || csrf;
    $("login").hidden = true;
    $("console").hidden = false;
    $("user-name").textContent = displayName();
    $("user-role").textContent = label("role", user.role);
    // The admin pane is for admins: others do not see its tab (the API refuses them anyway).
    document.querySelector("#tabs [data-pane=admin]").hidden = user.role !== "admin";
    applyStatic();
    mountPart("broadcasts", "OkBroadcast");
    mountPart("devices", "OkDevices");
    mountPart("admin", "OkAdmin");
    const want = (location.hash || "").slice(1);
    const panes = ["alarms", "broadcasts", "gateways", "devices"].concat(user.role === "admin" ? ["admin"] : []);
    showPane(panes.includes(want) ? want : "alarms");
    wasDown = false;
    connectLive();
    clearInterval(gatewayTimer);
    gatewayTimer = setInterval(loadGateways, GATEWAY_POLL_MS);
  }

  async function login(ev) {
    ev.preventDefault();
    unlockAudio(); // the click that logs in is the gesture that allows sound and notifications
    const button = $("login-submit");
    button.disabled = true;
    $("login-error").textContent = "";
    try {
      const session = await api.post("/api/session", {
        username: $("login-username").value.trim(), password: $("login-password").value,
      });
      $("login-password").value = "";
      startConsole(session);
    } catch (e) {
      const key = e.status === 401 ? "login.failed" : e.status === 429 || e.status === 423 ? "login.locked" : "login.error";
      $("login-error").textContent = t(key) + (e.status === 401 ? "" : "：" + e.message);
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try { await api.del("/api/session"); } catch (e) { /* the session is gone either way */ }
    showLogin("");
  }

  function switchLang() {
    lang = lang === "zh-CN" ? "en" : "zh-CN";
    localStorage.setItem(STORE_LANG, lang);
    applyStatic();
    if (user) {
      $("user-role").textContent = label("role", user.role);
      render();
      showModem(modem);
      if (!$("live-banner").hidden) setLive(window.__okLive === true);
      mountPart("broadcasts", "OkBroadcast");
      mountPart("devices", "OkDevices");
      mountPart("admin", "OkAdmin");
    }
  }

  async function boot() {
    applyStatic();
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    for (const b of document.querySelectorAll(".lang-switch")) b.addEventListener("click", switchLang);
    for (const b of document.querySelectorAll("#tabs [data-pane]")) b.addEventListener("click", () => showPane(b.dataset.pane));
    $("sound-enable").addEventListener("click", unlockAudio);
    document.addEventListener("click", () => { if (audio && audio.state !== "running") unlockAudio(); }, true);
    live.on("alarm", (a) => {
      if (pushedDuringReload) pushedDuringReload.push(a);
      upsert(a, true);
      renderLists();
      if (selected === a.id || selected === a.ref) { renderDetail(); refreshDetailData(selected); }
    });
    live.on("escalation", (s) => { if (s && s.alarm === selected) refreshDetailData(selected); });
    live.on("gateway", gatewayChanged);
    live.on("modem", showModem);
    try {
      startConsole(await api.get("/api/session"));
    } catch (e) {
      showLogin(e.status === 401 || e.status === 404 ? "" : e.message);
    }
  }

  window.OkConsole = { api, t, live, get user() { return user; }, get lang() { return lang; } };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot); else boot();
})();

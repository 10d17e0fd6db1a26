// The devices pane: every supervised button and speaker of the villages (GET /api/devices), and
// the items a gateway raised about them (lost, low battery, fault, tamper: GET
// /api/device-events), which staff acknowledge. Lower priority than alarms: no sound, no
// escalation; the tab shows how many wait. Updated live on `device` changes. Data is set as
// text only. Mounted by app.js as window.OkDevices.mount(el, ctx).
(function () {
  "use strict";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function mount(pane, ctx) {
    const { api, t, live } = ctx;
    const lang = ctx.lang;
    const label = (prefix, code) => { const k = prefix + "." + code; const s = t(k); return s === k ? String(code) : s; };
    const when = (ms) => (ms ? new Date(ms).toLocaleString(lang, { hour12: false }) : t("dev.never"));
    let devices = [];
    let items = [];
    let loading = false;
    let due = null;

    const itemsBox = el("ul", { id: "device-items", class: "alarm-list" });
    const itemsNone = el("p", { id: "device-items-none", class: "empty", text: t("dev.items.none") });
    const body = el("tbody", { id: "devices" });
    const none = el("p", { id: "devices-none", class: "empty", text: t("dev.none"), hidden: true });
    const heads = ["dev.id", "dev.village", "dev.household", "dev.status", "dev.power", "dev.last_seen", "dev.bat", "dev.fw"];
    pane.replaceChildren(
      el("h2", { text: t("dev.items") }), itemsBox, itemsNone,
      el("h2", { text: t("dev.title") }),
      el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: t(h) })))), body),
      none,
    );

    function badge() {
      const b = document.getElementById("dev-items");
      if (!b) return;
      const n = items.filter((i) => !i.acked_at && !i.cleared_at).length;
      b.textContent = String(n);
      b.hidden = n === 0;
    }

    function render() {
      body.replaceChildren();
      for (const d of devices) {
        const cells = [
          ["dev.id", d.id],
          ["dev.village", d.village],
          ["dev.household", d.household],
          ["dev.status", label("dev.status", d.status), "status-" + d.status],
          ["dev.power", label("dev.power", d.power)],
          ["dev.last_seen", when(d.last_seen)],
          ["dev.bat", d.bat === null || d.bat === undefined ? "—" : d.bat + "%"],
          ["dev.fw", d.fw || "—"],
        ];
        body.appendChild(el("tr", { "data-device": d.id },
          ...cells.map(([k, v, cls]) => el("td", { "data-label": t(k), class: cls, text: v }))));
      }
      none.hidden = devices.length > 0;
      itemsBox.replaceChildren();
      const open = items.filter((i) => i.raised && !i.acked_at);
      for (const i of open) {
        const ack = el("button", { type: "button", class: "ack", "data-ack": i.id, text: t("dev.ack"), onclick: () => acknowledge(i.id) });
        itemsBox.appendChild(el("li", { class: "device-item", "data-item": i.id },
          el("strong", { text: label("dev.what", i.what) }), " ",
          el("span", { text: i.device + " · " + i.village + " · " + i.household }), " ",
          el("span", { class: "muted", text: when(i.received_at) + (i.cleared_at ? " · " + t("dev.cleared") : "") }), " ",
          ack));
      }
      itemsNone.hidden = open.length > 0;
      badge();
    }

    // One load at a time; a change that arrives during one is not lost: it loads again after.
    let again = false;
    async function load() {
      if (loading) { again = true; return; }
      loading = true;
      try {
        [devices, items] = await Promise.all([api.get("/api/devices"), api.get("/api/device-events?open=true&limit=200")]);
        render();
      } catch (e) { /* the banner or the login says why */ }
      finally {
        loading = false;
        if (again) { again = false; load(); }
      }
    }

    async function acknowledge(id) {
      try { await api.post("/api/device-events/" + encodeURIComponent(id) + "/ack", { note: "" }); }
      catch (e) { window.alert((e && e.detail) || String(e)); }
      load();
    }

    const offs = [
      live.on("device", () => { if (!due) due = setTimeout(() => { due = null; load(); }, 300); }),
      live.on("reconnected", load),
    ];
    load();
    return { unmount() { for (const off of offs) if (typeof off === "function") off(); clearTimeout(due); } };
  }

  window.OkDevices = { mount };
})();

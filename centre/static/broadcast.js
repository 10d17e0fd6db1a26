// The console's broadcast pane: compose (villages and groups picked from lists), preview,
// confirm, approval by a second broadcaster, and the list of broadcasts with live coverage.
// window.OkBroadcast.mount(el, ctx); ctx = {api, t, user, live} (see docs/centre.md).
// Data from the server is only ever set as textContent.
(function () {
  "use strict";

  var SEVERITIES = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"];
  var URGENCIES = ["Immediate", "Expected", "Future", "Past", "Unknown"];
  var CERTAINTIES = ["Observed", "Likely", "Possible", "Unlikely", "Unknown"];
  var STATUSES = ["Actual", "Exercise"];
  var CLIPS = ["", "siren", "chime"];
  var LIVE = { scheduled: 1, sending: 1, sent: 1 };
  var MAX_TEXT = 500;
  var MAX_BY = 32;
  var GROUP_ID = /^[a-z0-9][a-z0-9-]{0,31}$/;

  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k === "text") el.textContent = v;
        else if (k === "on") Object.keys(v).forEach(function (ev) { el.addEventListener(ev, v[ev]); });
        else if (k === "cls") el.className = v;
        else if (k === "value") el.value = v;
        else if (k === "checked") el.checked = !!v;
        else if (k === "disabled") el.disabled = !!v;
        else if (k === "hidden") el.hidden = !!v;
        else el.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) el.appendChild(x); });
      else el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return el;
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  function errorText(err, t) {
    if (!err) return "";
    if (err.status === 403) return t("f.refused") + (err.detail ? " (" + detailText(err.detail) + ")" : "");
    if (err.detail !== undefined) return detailText(err.detail);
    return String(err.message || err);
  }

  function detailText(d) {
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {
      return d.map(function (e) {
        if (e && typeof e === "object") {
          var loc = Array.isArray(e.loc) ? e.loc.filter(function (x) { return x !== "body"; }).join(".") : "";
          var msg = e.msg || e.error || e.message || JSON.stringify(e);
          return loc ? loc + ": " + msg : msg;
        }
        return String(e);
      }).join("; ");
    }
    try { return JSON.stringify(d); } catch (e) { return String(d); }
  }

  // ctx.api is the console's API client: a function (method, path, body), or an object whose
  // request(method, path, body) is that function.
  function caller(ctx) {
    return function (method, path, body) {
      return typeof ctx.api === "function" ? ctx.api(method, path, body) : ctx.api.request(method, path, body);
    };
  }

  function lang() { return document.documentElement.lang || "zh-CN"; }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "";
    return new Date(ms).toLocaleString(lang(), { hour12: false });
  }

  // datetime-local value <-> Unix ms, in the browser's time zone.
  function toLocalInput(ms) {
    var d = new Date(ms);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes());
  }
  function fromLocalInput(v) {
    if (!v) return null;
    var ms = new Date(v).getTime();
    return isNaN(ms) ? null : ms;
  }

  // Played / targeted speakers: the server's coverage when it gives one, else the count of
  // speakers by their latest reported state.
  function coverage(bc) {
    if (bc.coverage && bc.coverage.overall) {
      return { played: bc.coverage.overall.played || 0, targeted: bc.coverage.overall.targeted || 0,
               villages: bc.coverage.villages || [] };
    }
    var sp = (bc.summary && bc.summary.speakers) || {};
    var targeted = 0;
    Object.keys(sp).forEach(function (k) { targeted += sp[k]; });
    return { played: sp.played || 0, targeted: targeted, villages: [] };
  }

  function awaitsApproval(bc) {
    return bc.state === "awaiting_approval";
  }

  function mount(el, ctx) {
    var api = caller(ctx);
    var t = function (k) { var v = ctx.t(k); return v === undefined || v === null ? k : v; };
    var user = ctx.user || {};
    var canSend = user.role === "broadcaster" || user.role === "admin";
    var actor = (user.display_name || user.username || "").slice(0, MAX_BY);
    var destroyed = false;
    var unsubs = [];

    var villages = [];        // [{id, gateways: [names]}], from /api/gateways
    var groupsOf = {};        // village -> {group: households}
    var householdsOf = {};    // village -> households count
    var broadcasts = [];      // newest first
    var pendingBody = null;   // the body being confirmed

    clear(el);
    var msg = h("div", { cls: "okf-msg", role: "status", "data-testid": "bc-msg" });
    var newBtn = canSend ? h("button", { type: "button", "data-testid": "bc-new", text: t("bc.new") }) : null;
    var root = h("section", { cls: "okf okf-bc", "data-testid": "bc-pane" },
      h("div", { cls: "okf-bar" }, h("h2", { text: t("bc.title") }), newBtn),
      canSend ? null : h("p", { cls: "okf-dim", "data-testid": "bc-readonly", text: t("bc.readonly") }),
      msg);
    el.appendChild(root);

    function say(text, ok) {
      msg.textContent = text || "";
      msg.className = "okf-msg " + (ok ? "okf-ok" : "okf-err");
    }

    // -- compose
    var form = null, confirmBox = null;
    var fields = {};
    if (canSend) {
      var sel = function (name, values, prefix, dflt) {
        var s = h("select", { name: name, "data-testid": "bc-" + name });
        values.forEach(function (v) {
          s.appendChild(h("option", { value: v, text: t(prefix + (v || "none")) }));
        });
        s.value = dflt;
        return s;
      };
      fields.villages = h("div", { cls: "okf-villages", "data-testid": "bc-villages" });
      fields.text = h("textarea", { name: "text", maxlength: MAX_TEXT, placeholder: t("bc.text_ph"), "data-testid": "bc-text" });
      fields.severity = sel("severity", SEVERITIES, "sev.", "Moderate");
      fields.urgency = sel("urgency", URGENCIES, "urg.", "Expected");
      fields.certainty = sel("certainty", CERTAINTIES, "cert.", "Observed");
      fields.status = sel("status", STATUSES, "status.", "Actual");
      fields.clip = sel("clip", CLIPS, "clip.", "");
      fields.repeat = h("input", { name: "repeat", type: "number", min: 1, max: 5, value: "1", "data-testid": "bc-repeat" });
      fields.start = h("input", { name: "start", type: "datetime-local", "data-testid": "bc-start" });
      fields.expires = h("input", { name: "expires", type: "datetime-local", "data-testid": "bc-expires" });
      var previewBtn = h("button", { type: "submit", "data-testid": "bc-preview", text: t("bc.preview") });
      var closeBtn = h("button", { type: "button", cls: "okf-2", text: t("f.cancel"), on: { click: function () { showForm(false); } } });
      form = h("form", { "data-testid": "bc-form", hidden: true, novalidate: true },
        h("div", { cls: "okf-grid" },
          h("div", { cls: "okf-wide" }, h("div", { text: t("bc.villages") }), h("div", { cls: "okf-dim", text: t("bc.groups") }), fields.villages),
          h("label", { cls: "okf-wide" }, t("bc.text"), fields.text),
          h("label", null, t("bc.severity"), fields.severity),
          h("label", null, t("bc.urgency"), fields.urgency),
          h("label", null, t("bc.certainty"), fields.certainty),
          h("label", null, t("bc.status"), fields.status),
          h("label", null, t("bc.clip"), fields.clip),
          h("label", null, t("bc.repeat"), fields.repeat),
          h("label", null, t("bc.start"), fields.start),
          h("label", null, t("bc.expires"), fields.expires),
          h("div", { cls: "okf-wide" }, previewBtn, " ", closeBtn)));
      form.addEventListener("submit", function (ev) { ev.preventDefault(); preview(); });
      confirmBox = h("div", { cls: "okf-box", "data-testid": "bc-confirm", hidden: true });
      root.appendChild(form);
      root.appendChild(confirmBox);
      newBtn.addEventListener("click", function () { showForm(true); });
    }

    function showForm(on) {
      if (!form) return;
      form.hidden = !on;
      confirmBox.hidden = true;
      if (newBtn) newBtn.hidden = on;
      if (on) {
        if (!fields.expires.value) fields.expires.value = toLocalInput(Date.now() + 60 * 60000);
        say("");
        renderVillages();
      }
    }

    function renderVillages() {
      var box = fields.villages;
      var picked = selection();
      clear(box);
      if (!villages.length) {
        box.appendChild(h("div", { cls: "okf-dim", text: t("bc.no_villages") }));
        return;
      }
      villages.forEach(function (v) {
        var cb = h("input", { type: "checkbox", value: v.id, "data-village": v.id, checked: !!picked[v.id] });
        var groupsBox = h("div", { cls: "okf-groups", hidden: !picked[v.id] });
        var groups = Object.keys(groupsOf[v.id] || {}).sort();
        groups.forEach(function (g) {
          // A broadcast names speaker groups by id (§1.1); a household group named otherwise
          // (第一村民小组) has no speakers of its own to address.
          var usable = GROUP_ID.test(g);
          var gcb = h("input", { type: "checkbox", value: g, "data-group": g, "data-of": v.id, disabled: !usable,
            checked: usable && !!(picked[v.id] && picked[v.id].indexOf(g) >= 0) });
          groupsBox.appendChild(h("label", { cls: "okf-inline" + (usable ? "" : " okf-dim"), title: usable ? null : t("bc.group_not_id") }, gcb,
            h("span", { text: g }), h("span", { cls: "okf-dim", text: "(" + groupsOf[v.id][g] + " " + t("bc.households_n") + ")" })));
        });
        if (groups.some(function (g) { return !GROUP_ID.test(g); })) {
          groupsBox.appendChild(h("div", { cls: "okf-dim", text: t("bc.group_not_id") }));
        }
        cb.addEventListener("change", function () { groupsBox.hidden = !cb.checked; });
        var info = [];
        if (v.gateways.length) info.push(t("bc.served_by") + " " + v.gateways.join(", "));
        if (householdsOf[v.id]) info.push(householdsOf[v.id] + " " + t("bc.households_n"));
        box.appendChild(h("div", { cls: "okf-village" },
          h("label", { cls: "okf-inline" }, cb, h("strong", { text: v.label || v.id }),
            h("span", { cls: "okf-dim", text: info.length ? "(" + info.join("; ") + ")" : "" })),
          groups.length ? groupsBox : null));
      });
    }

    // {village: [groups]} of what is ticked
    function selection() {
      var out = {};
      if (!fields.villages) return out;
      fields.villages.querySelectorAll("input[data-village]").forEach(function (cb) {
        if (cb.checked) out[cb.value] = [];
      });
      fields.villages.querySelectorAll("input[data-group]").forEach(function (cb) {
        var v = cb.getAttribute("data-of");
        if (cb.checked && out[v]) out[v].push(cb.value);
      });
      return out;
    }

    function villageLabel(id) {
      for (var i = 0; i < villages.length; i++) if (villages[i].id === id) return villages[i].label || id;
      return id;
    }

    function preview() {
      var sel = selection();
      var names = Object.keys(sel);
      if (!names.length) { say(t("bc.pick_village")); return; }
      var text = fields.text.value.trim();
      var clip = fields.clip.value;
      if (!text && !clip) { say(t("bc.need_text")); return; }
      var start = fromLocalInput(fields.start.value);
      var expires = fromLocalInput(fields.expires.value);
      var from = start === null ? Date.now() : start;
      if (expires === null || expires <= from) { say(t("bc.bad_expiry")); return; }
      say("");
      var body = {
        by: actor || "staff",
        status: fields.status.value,
        urgency: fields.urgency.value,
        severity: fields.severity.value,
        certainty: fields.certainty.value,
        expires: expires,
        area: names.map(function (v) { return { village: v, groups: sel[v] }; }),
        language: "zh-CN",
        text: text,
        repeat: Math.max(1, Math.min(5, parseInt(fields.repeat.value, 10) || 1))
      };
      if (start !== null) body.start = start;
      if (clip) body.clip = clip;
      var wholeVillages = names.filter(function (v) { return !sel[v].length; });
      var needsExtreme = body.severity === "Extreme" && wholeVillages.length > 0;
      pendingBody = body;

      clear(confirmBox);
      var spoken = (body.status === "Exercise" ? t("bc.drill_prefix") : "") + text;
      var where = h("ul", { "data-testid": "bc-preview-where" });
      names.forEach(function (v) {
        var groups = sel[v];
        var count = 0;
        if (groups.length) groups.forEach(function (g) { count += (groupsOf[v] || {})[g] || 0; });
        else count = householdsOf[v] || 0;
        where.appendChild(h("li", { text: villageLabel(v) + " — " + (groups.length ? groups.join(", ") : t("bc.whole_village")) +
          (count ? " (" + count + " " + t("bc.households_n") + ")" : "") }));
      });
      var sendBtn = h("button", { type: "button", "data-testid": "bc-send", text: t("bc.send") });
      var extreme = null;
      if (needsExtreme) {
        var tick = h("input", { type: "checkbox", "data-testid": "bc-extreme-tick" });
        extreme = h("div", { cls: "okf-extreme", "data-testid": "bc-extreme" },
          h("label", { cls: "okf-inline" }, tick,
            h("span", { text: t("bc.extreme_confirm") + " " + wholeVillages.map(villageLabel).join(", ") })));
        sendBtn.disabled = true;
        tick.addEventListener("change", function () { sendBtn.disabled = !tick.checked; });
      }
      confirmBox.appendChild(h("h3", { text: t("bc.preview_title") }));
      confirmBox.appendChild(h("div", null,
        h("span", { cls: "okf-sev-" + body.severity, text: t("sev." + body.severity) }), " · ",
        t("urg." + body.urgency), " · ", t("cert." + body.certainty), " · ", t("status." + body.status)));
      confirmBox.appendChild(h("p", null, h("strong", { text: t("bc.will_say") })));
      confirmBox.appendChild(h("div", { cls: "okf-say", "data-testid": "bc-preview-text",
        text: (clip ? "[" + t("clip." + clip) + "] " : "") + spoken }));
      confirmBox.appendChild(h("div", { cls: "okf-dim", text: "× " + body.repeat + " " + t("bc.times") }));
      confirmBox.appendChild(h("p", null, h("strong", { text: t("bc.where") })));
      confirmBox.appendChild(where);
      confirmBox.appendChild(h("p", null, h("strong", { text: t("bc.when") }), " ",
        start === null ? t("bc.now") : fmtTime(start), " ", t("bc.until"), " ", fmtTime(expires)));
      if (extreme) confirmBox.appendChild(extreme);
      var back = h("button", { type: "button", cls: "okf-2", "data-testid": "bc-back", text: t("f.back"),
        on: { click: function () { confirmBox.hidden = true; form.hidden = false; } } });
      confirmBox.appendChild(h("div", null, sendBtn, " ", back));
      sendBtn.addEventListener("click", function () {
        var b = pendingBody;
        if (!b) return;
        if (needsExtreme) b.confirm_extreme = true;
        sendBtn.disabled = true;
        api("POST", "/api/broadcasts", b).then(function (created) {
          pendingBody = null;
          fields.text.value = "";
          showForm(false);
          say(awaitsApproval(created) ? t("bc.held_ok") : t("bc.sent_ok"), true);
          upsert(created);
        }, function (err) {
          sendBtn.disabled = false;
          say(t("f.error") + errorText(err, t));
        });
      });
      form.hidden = true;
      confirmBox.hidden = false;
    }

    // -- lists
    var approvals = h("section", { "data-testid": "bc-approvals", hidden: true });
    var listBox = h("div", { cls: "okf-table" });
    root.appendChild(approvals);
    root.appendChild(h("h3", { text: t("bc.list") }));
    root.appendChild(listBox);
    var detailBox = h("div", { cls: "okf-box", "data-testid": "bc-detail", hidden: true });
    root.appendChild(detailBox);

    function upsert(bc) {
      if (!bc || !bc.id) return;
      for (var i = 0; i < broadcasts.length; i++) {
        if (broadcasts[i].id === bc.id) { broadcasts[i] = bc; renderList(); return; }
      }
      broadcasts.unshift(bc);
      renderList();
    }

    function areaText(bc) {
      return (bc.area || []).map(function (a) {
        return villageLabel(a.village) + (a.groups && a.groups.length ? " (" + a.groups.join(", ") + ")" : "");
      }).join("; ");
    }

    function stateText(bc) {
      var s = t("bc.state." + bc.state);
      if (bc.msgType && bc.msgType !== "Alert") s = t("bc.msg." + bc.msgType) + " · " + s;
      if (bc.status && bc.status !== "Actual") s += " · " + t("status." + bc.status);
      return s;
    }

    function row(bc, withApprove) {
      var cov = coverage(bc);
      var actions = h("td");
      if (canSend && withApprove) {
        var mine = bc.by === actor || bc.created_by === user.username || bc.by === user.username;
        if (mine) actions.appendChild(h("span", { cls: "okf-dim", text: t("bc.approve_self") }));
        else actions.appendChild(h("button", { type: "button", "data-testid": "bc-approve", text: t("bc.approve"),
          on: { click: function (ev) { approve(bc, ev.target); } } }));
      } else if (canSend && LIVE[bc.state] && bc.msgType !== "Cancel" && !bc.expired) {
        actions.appendChild(h("button", { type: "button", cls: "okf-2", "data-testid": "bc-cancel", text: t("bc.cancel"),
          on: { click: function () { askCancel(bc, actions); } } }));
      }
      actions.appendChild(h("button", { type: "button", cls: "okf-2", "data-testid": "bc-details", text: t("bc.details"),
        on: { click: function () { showDetail(bc.id); } } }));
      return h("tr", { "data-bc": bc.id, "data-state": bc.state },
        h("td", { text: fmtTime(bc.created_at) }),
        h("td", null, h("div", { "data-testid": "bc-state", text: stateText(bc) }),
          bc.hold_reason ? h("div", { cls: "okf-dim", text: bc.hold_reason }) : null),
        h("td", null, h("span", { cls: "okf-sev-" + bc.severity, text: t("sev." + bc.severity) })),
        h("td", { text: areaText(bc) }),
        h("td", { cls: "okf-text", text: bc.text || (bc.clip ? "[" + t("clip." + bc.clip) + "]" : "") }),
        h("td", null, h("div", { "data-testid": "bc-coverage", text: cov.played + " / " + cov.targeted }),
          cov.villages.length > 1 ? h("div", { cls: "okf-dim", "data-testid": "bc-coverage-villages",
            text: cov.villages.map(function (v) { return villageLabel(v.village) + " " + v.played + " / " + v.targeted; }).join("; ") }) : null),
        h("td", { text: (bc.by || "") + (bc.approved_by ? " · " + t("bc.approved_by") + " " + bc.approved_by : "") }),
        actions);
    }

    function table(list, withApprove) {
      var head = h("tr", null, ["bc.col.time", "bc.col.state", "bc.col.severity", "bc.col.area", "bc.col.text",
        "bc.col.coverage", "bc.col.by", "f.actions"].map(function (k) { return h("th", { text: t(k) }); }));
      var body = h("tbody");
      list.forEach(function (bc) { body.appendChild(row(bc, withApprove)); });
      return h("table", { "data-testid": withApprove ? "bc-approval-table" : "bc-table" }, h("thead", null, head), body);
    }

    function renderList() {
      var waiting = broadcasts.filter(awaitsApproval);
      var rest = broadcasts.filter(function (bc) { return !awaitsApproval(bc); });
      clear(approvals);
      approvals.hidden = !waiting.length;
      if (waiting.length) {
        approvals.appendChild(h("h3", { text: t("bc.awaiting") }));
        approvals.appendChild(h("div", { cls: "okf-table" }, table(waiting, true)));
      }
      clear(listBox);
      if (!rest.length) listBox.appendChild(h("div", { cls: "okf-dim", text: t("f.empty") }));
      else listBox.appendChild(table(rest, false));
    }

    // One broadcast's gateways and speakers, kept up to date while it is open.
    var detailId = null;
    function showDetail(id) {
      detailId = id;
      api("GET", "/api/broadcasts/" + encodeURIComponent(id)).then(function (d) {
        if (!destroyed && detailId === id) renderDetail(d);
      }, function (err) { say(t("f.error") + errorText(err, t)); });
    }
    function renderDetail(d) {
      clear(detailBox);
      detailBox.hidden = false;
      var close = h("button", { type: "button", cls: "okf-2", text: t("f.close"),
        on: { click: function () { detailId = null; detailBox.hidden = true; clear(detailBox); } } });
      detailBox.appendChild(h("div", { cls: "okf-bar" }, h("h3", { text: t("bc.detail_title") + " " + d.id }), close));
      detailBox.appendChild(h("div", { cls: "okf-say", text: d.text || "" }));
      var gwBody = h("tbody");
      (d.gateways || []).forEach(function (g) {
        gwBody.appendChild(h("tr", null, h("td", { text: g.gw }), h("td", { text: (g.villages || []).join(", ") }),
          h("td", { text: t("copy." + g.state) }), h("td", { text: g.sent_at ? fmtTime(g.sent_at) : "" }),
          h("td", { text: String(g.reports) })));
      });
      detailBox.appendChild(h("div", { cls: "okf-table" }, h("table", { "data-testid": "bc-detail-gateways" },
        h("thead", null, h("tr", null, ["bc.d.gateway", "bc.col.area", "bc.col.state", "bc.d.sent_at", "bc.d.reports"]
          .map(function (k) { return h("th", { text: t(k) }); }))), gwBody)));
      var spBody = h("tbody");
      (d.speakers || []).forEach(function (sp) {
        spBody.appendChild(h("tr", null, h("td", { text: sp.device }), h("td", { text: sp.gw }),
          h("td", { text: t("sp." + sp.state) }), h("td", { text: fmtTime(sp.at) })));
      });
      detailBox.appendChild(h("div", { cls: "okf-table" }, h("table", { "data-testid": "bc-detail-speakers" },
        h("thead", null, h("tr", null, ["bc.d.speaker", "bc.d.gateway", "bc.col.state", "bc.col.time"]
          .map(function (k) { return h("th", { text: t(k) }); }))), spBody)));
      detailBox.appendChild(h("a", { href: "/api/broadcasts/" + encodeURIComponent(d.id) + "/cap",
        download: d.id + ".xml", text: t("bc.d.cap") }));
    }

    function askCancel(bc, cell) {
      clear(cell);
      var note = h("input", { type: "text", maxlength: 200, placeholder: t("bc.cancel_note"), "data-testid": "bc-cancel-note" });
      var yes = h("button", { type: "button", "data-testid": "bc-cancel-yes", text: t("f.confirm") });
      var no = h("button", { type: "button", cls: "okf-2", text: t("f.cancel"), on: { click: renderList } });
      cell.appendChild(h("div", { text: t("bc.cancel_confirm") }));
      cell.appendChild(note);
      cell.appendChild(h("div", null, yes, " ", no));
      yes.addEventListener("click", function () {
        yes.disabled = true;
        api("POST", "/api/broadcasts/" + encodeURIComponent(bc.id) + "/cancel",
          { by: actor || "staff", note: note.value.trim() }).then(function (out) {
          say(t("bc.cancelled_ok"), true);
          upsert(out && out.broadcast ? out.broadcast : out);
          if (out && out.cancel) upsert(out.cancel);
        }, function (err) { say(t("f.error") + errorText(err, t)); renderList(); });
      });
    }

    function approve(bc, btn) {
      btn.disabled = true;
      api("POST", "/api/broadcasts/" + encodeURIComponent(bc.id) + "/approve", {}).then(function (out) {
        say(t("bc.approved_ok"), true);
        upsert(out && out.broadcast ? out.broadcast : out);
      }, function (err) { btn.disabled = false; say(t("f.error") + errorText(err, t)); });
    }

    function loadTargets() {
      return Promise.all([
        api("GET", "/api/gateways").catch(function () { return []; }),
        api("GET", "/api/households?limit=5000").catch(function () { return []; })
      ]).then(function (res) {
        var byVillage = {};
        (res[0] || []).forEach(function (gw) {
          var vs = (gw.villages && gw.villages.length ? gw.villages : gw.reported_villages) || [];
          vs.forEach(function (v) {
            byVillage[v] = byVillage[v] || { id: v, gateways: [], label: "" };
            byVillage[v].gateways.push(gw.name || gw.id);
          });
        });
        groupsOf = {};
        householdsOf = {};
        (res[1] || []).forEach(function (hh) {
          var v = hh.village;
          if (!v || !byVillage[v]) return;  // only villages a gateway serves can be reached
          householdsOf[v] = (householdsOf[v] || 0) + 1;
          if (hh.village_name && !byVillage[v].label) byVillage[v].label = hh.village_name;
          if (hh.group) {
            groupsOf[v] = groupsOf[v] || {};
            groupsOf[v][hh.group] = (groupsOf[v][hh.group] || 0) + 1;
          }
        });
        villages = Object.keys(byVillage).sort().map(function (k) { return byVillage[k]; });
        if (form && !form.hidden) renderVillages();
      });
    }

    function loadList() {
      return api("GET", "/api/broadcasts?limit=50").then(function (list) {
        broadcasts = list || [];
        renderList();
      }, function (err) { say(t("f.error") + errorText(err, t)); });
    }

    // One fetch per broadcast at a time; a change that arrives while it runs (a second report
    // batch) is not lost: the broadcast is fetched once more when the first answer is in.
    var refreshing = {};
    function onChange(data) {
      if (destroyed || !data || !data.id) return;
      var id = data.id;
      if (refreshing[id]) { refreshing[id] = "again"; return; }
      refreshing[id] = true;
      function done() {
        var again = refreshing[id] === "again";
        delete refreshing[id];
        if (again && !destroyed) onChange({ id: id });
      }
      api("GET", "/api/broadcasts/" + encodeURIComponent(id)).then(function (bc) {
        if (!destroyed) {
          upsert(bc);
          if (detailId === bc.id) renderDetail(bc);
        }
        done();
      }, done);
    }

    if (ctx.live && typeof ctx.live.on === "function") {
      unsubs.push(ctx.live.on("broadcast", onChange));
      unsubs.push(ctx.live.on("gateway", function () { if (!destroyed) loadTargets(); }));
    }
    listBox.appendChild(h("div", { cls: "okf-dim", text: t("f.loading") }));
    loadList();
    if (canSend) loadTargets();

    return {
      refresh: function () { loadList(); if (canSend) loadTargets(); },
      unmount: destroy,
      destroy: destroy
    };
    function destroy() {
      destroyed = true;
      unsubs.forEach(function (u) { if (typeof u === "function") u(); });
      clear(el);
    }
  }

  window.OkBroadcast = {
    mount: mount,
    // shared with admin.js
    _util: { h: h, clear: clear, errorText: errorText, detailText: detailText, fmtTime: fmtTime, caller: caller }
  };
})();

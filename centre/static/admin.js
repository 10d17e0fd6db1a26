// The console's admin pane (admin role only): users and their API tokens, households with their
// ordered contacts (editor, CSV import and export), the audit log, and the settings the server
// has. window.OkAdmin.mount(el, ctx); ctx = {api, t, user, live}. Uses broadcast.js's helpers
// (window.OkBroadcast._util), so both files are loaded before the pane is mounted.
// Data from the server is only ever set as textContent or as an input's value.
(function () {
  "use strict";

  var ROLES = ["operator", "broadcaster", "admin"];
  var KINDS = ["leader", "grid", "family", "doctor"];
  var AUDIT_PAGE = 50;
  // The admin API, in one place.
  var API = {
    users: "/api/users",
    user: function (id) { return "/api/users/" + encodeURIComponent(id); },
    tokens: function (id) { return "/api/users/" + encodeURIComponent(id) + "/tokens"; },
    token: function (id, tid) { return "/api/users/" + encodeURIComponent(id) + "/tokens/" + encodeURIComponent(tid); },
    households: "/api/households",
    household: function (id) { return "/api/households/" + encodeURIComponent(id); },
    hhImport: "/api/households/import",
    hhExport: "/api/households/export",
    audit: "/api/audit",
    settings: [
      { key: "adm.settings.escalation", path: "/api/escalation/policy", escalation: true },
      { key: "adm.settings.broadcast", path: "/api/settings/broadcasts",
        choices: { approval: ["none", "extreme", "all"] } }
    ]
  };

  function mount(el, ctx) {
    var U = window.OkBroadcast && window.OkBroadcast._util;
    if (!U) throw new Error("admin.js needs broadcast.js loaded first");
    var h = U.h, clear = U.clear, fmtTime = U.fmtTime;
    var api = U.caller(ctx);
    var t = function (k) { var v = ctx.t(k); return v === undefined || v === null ? k : v; };
    var errText = function (err) { return t("f.error") + U.errorText(err, t); };
    var user = ctx.user || {};
    clear(el);
    if (user.role !== "admin") {
      el.appendChild(h("section", { cls: "okf", "data-testid": "adm-pane" },
        h("p", { cls: "okf-dim", text: t("adm.only") })));
      var gone = function () { clear(el); };
      return { unmount: gone, destroy: gone, refresh: function () {} };
    }
    var msg = h("div", { cls: "okf-msg", role: "status", "data-testid": "adm-msg" });
    var tabs = h("div", { cls: "okf-tabs", role: "tablist" });
    var body = h("div");
    var root = h("section", { cls: "okf okf-adm", "data-testid": "adm-pane" },
      h("h2", { text: t("adm.title") }), tabs, msg, body);
    el.appendChild(root);

    function say(text, ok) {
      msg.textContent = text || "";
      msg.className = "okf-msg " + (ok ? "okf-ok" : "okf-err");
    }

    var SECTIONS = [
      ["users", "adm.tab.users", renderUsers],
      ["households", "adm.tab.households", renderHouseholds],
      ["audit", "adm.tab.audit", renderAudit],
      ["settings", "adm.tab.settings", renderSettings]
    ];
    var current = null;
    SECTIONS.forEach(function (s) {
      var b = h("button", { type: "button", role: "tab", "data-testid": "adm-tab-" + s[0], text: t(s[1]),
        on: { click: function () { show(s[0]); } } });
      tabs.appendChild(b);
    });

    function show(name) {
      current = name;
      tabs.querySelectorAll("button").forEach(function (b) {
        b.setAttribute("aria-selected", b.getAttribute("data-testid") === "adm-tab-" + name ? "true" : "false");
      });
      say("");
      clear(body);
      SECTIONS.forEach(function (s) { if (s[0] === name) s[2](); });
    }

    function input(name, attrs) {
      var a = Object.assign({ name: name, "data-testid": name }, attrs || {});
      return h("input", a);
    }

    function roleSelect(name, value) {
      var s = h("select", { name: name, "data-testid": name });
      ROLES.forEach(function (r) { s.appendChild(h("option", { value: r, text: t("role." + r) })); });
      s.value = value || "operator";
      return s;
    }

    function th(keys) { return h("thead", null, h("tr", null, keys.map(function (k) { return h("th", { text: t(k) }); }))); }

    // -- users and tokens
    function renderUsers() {
      var username = input("adm-user-name", { required: true, maxlength: 32, autocomplete: "off" });
      var display = input("adm-user-display", { maxlength: 64, autocomplete: "off" });
      var role = roleSelect("adm-user-role");
      var pw = input("adm-user-password", { type: "password", autocomplete: "new-password" });
      var addForm = h("form", { "data-testid": "adm-user-form" },
        h("div", { cls: "okf-grid" },
          h("label", null, t("adm.users.username"), username),
          h("label", null, t("adm.users.display"), display),
          h("label", null, t("adm.users.role"), role),
          h("label", null, t("adm.users.password"), pw),
          h("div", { cls: "okf-wide" }, h("button", { type: "submit", "data-testid": "adm-user-add", text: t("adm.users.add") }))));
      var listBox = h("div", { cls: "okf-table" }, h("div", { cls: "okf-dim", text: t("f.loading") }));
      body.appendChild(addForm);
      body.appendChild(listBox);
      addForm.addEventListener("submit", function (ev) {
        ev.preventDefault();
        api("POST", API.users, {
          username: username.value.trim(), display_name: display.value.trim() || username.value.trim(),
          role: role.value, password: pw.value
        }).then(function () {
          say(t("adm.users.added"), true);
          addForm.reset();
          load();
        }, function (err) { say(errText(err)); });
      });

      function load() {
        api("GET", API.users).then(function (users) {
          clear(listBox);
          var tb = h("tbody");
          (users || []).forEach(function (u) { tb.appendChild(userRow(u)); });
          listBox.appendChild(h("table", { "data-testid": "adm-users" },
            th(["adm.users.username", "adm.users.display", "adm.users.role", "adm.users.state", "adm.users.created", "f.actions"]), tb));
        }, function (err) { clear(listBox); say(errText(err)); });
      }

      function userRow(u) {
        var disabled = !!u.disabled;
        var locked = u.locked_until && u.locked_until > Date.now();
        var role = roleSelect("adm-user-role-of", u.role);
        role.addEventListener("change", function () {
          api("PUT", API.user(u.id) + "/role", { role: role.value }).then(function () {
            say(t("adm.users.role_ok"), true); load();
          }, function (err) { say(errText(err)); load(); });
        });
        var actions = h("td");
        var tokensCell = h("div", { hidden: true });
        var toggle = h("button", { type: "button", cls: "okf-2", "data-testid": "adm-user-toggle",
          text: disabled ? t("adm.users.enable") : t("adm.users.disable"),
          on: { click: function () {
            api("POST", API.user(u.id) + (disabled ? "/enable" : "/disable")).then(load, function (err) { say(errText(err)); });
          } } });
        var pwBtn = h("button", { type: "button", cls: "okf-2", "data-testid": "adm-user-passwd", text: t("adm.users.passwd"),
          on: { click: function () { askPassword(); } } });
        var tokBtn = h("button", { type: "button", cls: "okf-2", "data-testid": "adm-user-tokens", text: t("adm.users.tokens"),
          on: { click: function () { tokensCell.hidden = !tokensCell.hidden; if (!tokensCell.hidden) renderTokens(u, tokensCell); } } });
        var pwBox = h("div", { hidden: true });
        function askPassword() {
          clear(pwBox);
          pwBox.hidden = false;
          var np = input("adm-new-password", { type: "password", autocomplete: "new-password", placeholder: t("adm.users.new_password") });
          var ok = h("button", { type: "button", "data-testid": "adm-passwd-save", text: t("f.save") });
          ok.addEventListener("click", function () {
            api("PUT", API.user(u.id) + "/password", { password: np.value }).then(function () {
              pwBox.hidden = true; say(t("adm.users.passwd_ok"), true);
            }, function (err) { say(errText(err)); });
          });
          pwBox.appendChild(np); pwBox.appendChild(ok);
        }
        actions.appendChild(toggle); actions.appendChild(document.createTextNode(" "));
        actions.appendChild(pwBtn); actions.appendChild(document.createTextNode(" "));
        actions.appendChild(tokBtn);
        actions.appendChild(pwBox);
        actions.appendChild(tokensCell);
        return h("tr", { "data-user": u.username },
          h("td", { text: u.username }),
          h("td", { text: u.display_name || "" }),
          h("td", null, role),
          h("td", { "data-testid": "adm-user-state", text: (disabled ? t("adm.users.disabled") : t("adm.users.enabled")) +
            (locked ? " · " + t("adm.users.locked") + " " + fmtTime(u.locked_until) : "") }),
          h("td", { text: fmtTime(u.created_at) }),
          actions);
      }

      function renderTokens(u, box) {
        clear(box);
        var name = input("adm-token-name", { maxlength: 64, placeholder: t("adm.tokens.name") });
        var trole = roleSelect("adm-token-role", u.role);
        var secret = h("div", { hidden: true });
        var list = h("div");
        var create = h("button", { type: "button", "data-testid": "adm-token-create", text: t("adm.tokens.create") });
        box.appendChild(h("div", { cls: "okf-box" }, name, " ", trole, " ", create, secret, list));
        create.addEventListener("click", function () {
          api("POST", API.tokens(u.id), { name: name.value.trim(), role: trole.value }).then(function (out) {
            clear(secret);
            secret.hidden = false;
            secret.appendChild(h("div", { text: t("adm.tokens.secret") }));
            secret.appendChild(h("div", { cls: "okf-secret", "data-testid": "adm-token-secret",
              text: out.token || out.secret || "" }));
            name.value = "";
            loadTokens();
          }, function (err) { say(errText(err)); });
        });
        function loadTokens() {
          api("GET", API.tokens(u.id)).then(function (toks) {
            clear(list);
            if (!toks || !toks.length) { list.appendChild(h("div", { cls: "okf-dim", text: t("adm.tokens.none") })); return; }
            var tb = h("tbody");
            toks.forEach(function (tk) {
              var revoked = !!(tk.revoked || tk.revoked_at);
              var act = h("td");
              if (!revoked) act.appendChild(h("button", { type: "button", cls: "okf-2", "data-testid": "adm-token-revoke",
                text: t("adm.tokens.revoke"), on: { click: function () {
                  api("DELETE", API.token(u.id, tk.id)).then(loadTokens, function (err) { say(errText(err)); });
                } } }));
              else act.appendChild(h("span", { cls: "okf-dim", text: t("adm.tokens.revoked") }));
              tb.appendChild(h("tr", { "data-token": String(tk.id) },
                h("td", { text: tk.name || tk.label || String(tk.id) }),
                h("td", { text: t("role." + tk.role) }),
                h("td", { text: fmtTime(tk.created_at) }),
                h("td", { text: fmtTime(tk.last_used || tk.last_used_at) }),
                act));
            });
            list.appendChild(h("table", { "data-testid": "adm-tokens" },
              th(["adm.tokens.name", "adm.tokens.role", "adm.tokens.created", "adm.tokens.last_used", "f.actions"]), tb));
          }, function (err) { say(errText(err)); });
        }
        loadTokens();
      }
      load();
    }

    // -- households
    function renderHouseholds() {
      var all = [];
      var village = h("select", { "data-testid": "adm-hh-village" });
      var group = h("select", { "data-testid": "adm-hh-group" });
      var q = input("adm-hh-search", { type: "search", placeholder: t("adm.hh.search_ph") });
      var newBtn = h("button", { type: "button", "data-testid": "adm-hh-new", text: t("adm.hh.new"),
        on: { click: function () { editCard(null); } } });
      var file = input("adm-hh-file", { type: "file", accept: ".csv,text/csv" });
      var importBtn = h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-import", text: t("adm.hh.import") });
      var exportLink = h("a", { href: API.hhExport, download: "households.csv", "data-testid": "adm-hh-export", text: t("adm.hh.export") });
      var importOut = h("div", { "data-testid": "adm-hh-import-result" });
      var editor = h("div", { "data-testid": "adm-hh-editor", hidden: true });
      var listBox = h("div", { cls: "okf-table" });
      body.appendChild(h("div", { cls: "okf-box" },
        h("div", { cls: "okf-grid" },
          h("label", null, t("adm.hh.village"), village),
          h("label", null, t("adm.hh.group"), group),
          h("label", null, t("f.search"), q),
          h("div", null, newBtn)),
        h("div", { cls: "okf-grid" },
          h("label", null, t("adm.hh.import_file"), file),
          h("div", null, importBtn, " ", exportLink)),
        importOut));
      body.appendChild(editor);
      body.appendChild(listBox);
      village.addEventListener("change", function () { fillGroups(); renderList(); });
      group.addEventListener("change", renderList);
      q.addEventListener("input", renderList);
      importBtn.addEventListener("click", doImport);

      function options(sel, values, keep) {
        var old = sel.value;
        clear(sel);
        sel.appendChild(h("option", { value: "", text: t("f.all") }));
        values.forEach(function (v) { sel.appendChild(h("option", { value: v, text: v })); });
        sel.value = keep && values.indexOf(old) >= 0 ? old : "";
      }
      function uniq(list) { var s = {}; list.forEach(function (x) { if (x) s[x] = 1; }); return Object.keys(s).sort(); }
      function fillGroups() {
        options(group, uniq(all.filter(function (x) { return !village.value || x.village === village.value; })
          .map(function (x) { return x.group; })), true);
      }

      function load() {
        return api("GET", API.households + "?limit=5000").then(function (list) {
          all = list || [];
          options(village, uniq(all.map(function (x) { return x.village; })), true);
          fillGroups();
          renderList();
        }, function (err) { say(errText(err)); });
      }

      function renderList() {
        var needle = q.value.trim().toLowerCase();
        var shown = all.filter(function (x) {
          if (village.value && x.village !== village.value) return false;
          if (group.value && x.group !== group.value) return false;
          if (!needle) return true;
          return [x.id, x.name, x.address, x.phone].some(function (f) { return f && String(f).toLowerCase().indexOf(needle) >= 0; });
        });
        clear(listBox);
        var tb = h("tbody");
        shown.forEach(function (x) {
          var n = Array.isArray(x.contacts) ? x.contacts.length : (x.contacts_count !== undefined ? x.contacts_count : "");
          tb.appendChild(h("tr", { "data-hh": x.id },
            h("td", null, h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-open", text: x.id,
              on: { click: function () { editCard(x.id); } } })),
            h("td", { text: x.village || "" }),
            h("td", { text: x.group || "" }),
            h("td", { cls: "okf-text", "data-testid": "adm-hh-name", text: x.name || "" }),
            h("td", { cls: "okf-text", text: x.address || "" }),
            h("td", { text: x.phone || "" }),
            h("td", { text: String(n) })));
        });
        listBox.appendChild(h("div", { cls: "okf-dim", text: shown.length + " " + t("adm.hh.count") }));
        listBox.appendChild(h("table", { "data-testid": "adm-hh-table" },
          th(["adm.hh.id", "adm.hh.village", "adm.hh.group", "adm.hh.name", "adm.hh.address", "adm.hh.phone", "adm.hh.contacts_n"]), tb));
      }

      function editCard(id) {
        editor.hidden = false;
        clear(editor);
        editor.appendChild(h("div", { cls: "okf-dim", text: t("f.loading") }));
        var got = id ? api("GET", API.household(id)) : Promise.resolve({ contacts: [] });
        got.then(function (card) { buildEditor(id, card || {}); }, function (err) { editor.hidden = true; say(errText(err)); });
      }

      function buildEditor(id, card) {
        clear(editor);
        var f = {};
        function field(key, name, attrs, wide) {
          var el2 = (attrs && attrs.multiline) ? h("textarea", { name: name, "data-testid": "adm-hh-f-" + name, maxlength: attrs.maxlength })
            : input("adm-hh-f-" + name, Object.assign({ name: name }, attrs || {}));
          var v = card[name];
          el2.value = v === null || v === undefined ? "" : String(v);
          f[name] = el2;
          return h("label", wide ? { cls: "okf-wide" } : null, t(key), el2);
        }
        var idField = input("adm-hh-f-id", { name: "id", required: true, maxlength: 64, value: id || "" });
        // Known villages and groups to pick from while typing.
        var villageList = h("datalist", { id: "okf-hh-villages" });
        uniq(all.map(function (x) { return x.village; })).forEach(function (v) { villageList.appendChild(h("option", { value: v })); });
        var groupList = h("datalist", { id: "okf-hh-groups" });
        uniq(all.map(function (x) { return x.group; })).forEach(function (g) { groupList.appendChild(h("option", { value: g })); });
        if (id) idField.readOnly = true;
        // The server lists them in calling order (leader, grid, family in order, doctor).
        var contacts = (card.contacts || []).map(function (c) { return { kind: c.kind, name: c.name || "", relation: c.relation || "", phone: c.phone || "" }; });
        var contactsBox = h("div", { "data-testid": "adm-hh-contacts" });
        function drawContacts() {
          clear(contactsBox);
          contacts.forEach(function (c, i) {
            var kind = h("select", { "data-testid": "adm-hh-c-kind" });
            KINDS.forEach(function (k) { kind.appendChild(h("option", { value: k, text: t("kind." + k) })); });
            kind.value = c.kind || "family";
            var cn = h("input", { "data-testid": "adm-hh-c-name", maxlength: 100, placeholder: t("adm.hh.contact_name"), value: c.name });
            var rel = h("input", { "data-testid": "adm-hh-c-relation", maxlength: 50, placeholder: t("adm.hh.relation"), value: c.relation });
            var ph = h("input", { "data-testid": "adm-hh-c-phone", type: "tel", maxlength: 32, placeholder: t("adm.hh.phone"), value: c.phone });
            // A relation is for family contacts only (the kind says who the others are).
            rel.disabled = kind.value !== "family";
            kind.addEventListener("change", function () {
              c.kind = kind.value;
              rel.disabled = c.kind !== "family";
              if (rel.disabled) { rel.value = ""; c.relation = ""; }
            });
            cn.addEventListener("input", function () { c.name = cn.value; });
            rel.addEventListener("input", function () { c.relation = rel.value; });
            ph.addEventListener("input", function () { c.phone = ph.value; });
            function move(d) { var j = i + d; if (j < 0 || j >= contacts.length) return; var x = contacts[i]; contacts[i] = contacts[j]; contacts[j] = x; drawContacts(); }
            contactsBox.appendChild(h("div", { cls: "okf-contact", "data-testid": "adm-hh-contact" },
              kind, cn, rel, ph,
              h("div", null,
                h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-c-up", title: t("adm.hh.up"), text: "↑", on: { click: function () { move(-1); } } }),
                h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-c-down", title: t("adm.hh.down"), text: "↓", on: { click: function () { move(1); } } }),
                h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-c-remove", title: t("adm.hh.remove"), text: "×",
                  on: { click: function () { contacts.splice(i, 1); drawContacts(); } } }))));
          });
        }
        drawContacts();
        var addC = h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-add-contact", text: t("adm.hh.add_contact"),
          on: { click: function () { contacts.push({ kind: "family", name: "", relation: "", phone: "" }); drawContacts(); } } });
        var save = h("button", { type: "submit", "data-testid": "adm-hh-save", text: t("f.save") });
        var close = h("button", { type: "button", cls: "okf-2", text: t("f.close"),
          on: { click: function () { editor.hidden = true; clear(editor); } } });
        var del = id ? h("button", { type: "button", cls: "okf-2", "data-testid": "adm-hh-delete", text: t("adm.hh.delete"),
          on: { click: function () {
            if (del.getAttribute("data-armed") !== "1") { del.setAttribute("data-armed", "1"); del.textContent = t("adm.hh.delete_confirm"); return; }
            api("DELETE", API.household(id)).then(function () {
              say(t("adm.hh.deleted"), true); editor.hidden = true; clear(editor); load();
            }, function (err) { say(errText(err)); });
          } } }) : null;
        var form = h("form", { "data-testid": "adm-hh-form" },
          h("div", { cls: "okf-grid" },
            h("label", null, t("adm.hh.id"), idField),
            field("adm.hh.village", "village", { maxlength: 32, list: "okf-hh-villages" }),
            field("adm.hh.group", "group", { maxlength: 32, list: "okf-hh-groups" }),
            field("adm.hh.name", "name", { maxlength: 100 }),
            field("adm.hh.address", "address", { maxlength: 200 }, true),
            field("adm.hh.phone", "phone", { type: "tel", maxlength: 32 }),
            field("adm.hh.lat", "lat", { type: "number", step: "any", min: -90, max: 90 }),
            field("adm.hh.lon", "lon", { type: "number", step: "any", min: -180, max: 180 }),
            field("adm.hh.medical", "medical", { multiline: true, maxlength: 1000 }, true),
            field("adm.hh.language", "language_notes", { multiline: true, maxlength: 1000 }, true),
            field("adm.hh.notes", "notes", { multiline: true, maxlength: 1000 }, true),
            h("div", { cls: "okf-wide" }, h("div", { text: t("adm.hh.contacts") }), contactsBox, addC),
            h("div", { cls: "okf-wide" }, save, " ", close, " ", del)));
        form.addEventListener("submit", function (ev) {
          ev.preventDefault();
          var hid = idField.value.trim();
          if (!hid) { say(t("adm.hh.id")); return; }
          var num = function (v) { return v.trim() === "" ? null : Number(v); };
          var out = {
            village: f.village.value.trim(), group: f.group.value.trim(), name: f.name.value.trim(),
            address: f.address.value.trim(), phone: f.phone.value.trim(), medical: f.medical.value.trim(),
            language_notes: f.language_notes.value.trim(), notes: f.notes.value.trim(),
            lat: num(f.lat.value), lon: num(f.lon.value),
            contacts: contacts.map(function (c, i) {
              return { kind: c.kind, name: c.name.trim(), relation: c.kind === "family" ? c.relation.trim() : "", phone: c.phone.trim() };
            })
          };
          api("PUT", API.household(hid), out).then(function () {
            say(t("adm.hh.saved"), true);
            editor.hidden = true;
            clear(editor);
            load();
          }, function (err) { say(errText(err)); });
        });
        editor.appendChild(villageList);
        editor.appendChild(groupList);
        editor.appendChild(form);
        if (editor.scrollIntoView) editor.scrollIntoView({ block: "start" });
      }

      // The import sends the file as text/csv and reads the refusal's line-numbered problems,
      // which the console's API client would reduce to one message: its own request, with the
      // session's CSRF token.
      function doImport() {
        clear(importOut);
        var fl = file.files && file.files[0];
        if (!fl) { say(t("adm.hh.import_file")); return; }
        importBtn.disabled = true;
        Promise.all([fl.text(), api("GET", "/api/session")]).then(function (got) {
          var headers = { "Content-Type": "text/csv", "Accept": "application/json" };
          if (got[1] && got[1].csrf) headers["X-CSRF-Token"] = got[1].csrf;
          return fetch(API.hhImport, { method: "POST", headers: headers, body: got[0], credentials: "same-origin", cache: "no-store" });
        }).then(function (r) {
          return r.json().catch(function () { return {}; }).then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
        }).then(function (res) {
          importBtn.disabled = false;
          var d = res.data || {};
          if (res.ok) {
            importOut.appendChild(h("div", { cls: "okf-ok", "data-testid": "adm-hh-import-ok",
              text: t("adm.hh.import_ok") + t("adm.hh.import_counts").replace("{n}", String(d.imported))
                .replace("{created}", String(d.created)).replace("{updated}", String(d.updated)) }));
            file.value = "";
            load();
            return;
          }
          // The problems listed one a line; the server's one-line summary only when there are none.
          var problems = d.problems || [];
          importOut.appendChild(h("div", { cls: "okf-err", text: t("adm.hh.import_failed") +
            (problems.length ? "" : " " + U.detailText(d.detail || ("HTTP " + res.status))) }));
          var list = h("ul", { "data-testid": "adm-hh-import-errors" });
          problems.forEach(function (p) {
            var where = p.line ? t("adm.hh.line").replace("{n}", String(p.line)) : t("adm.hh.file");
            list.appendChild(h("li", { text: where + (p.column ? " · " + p.column : "") + ": " + p.rule }));
          });
          if (d.total && d.problems && d.total > d.problems.length) {
            list.appendChild(h("li", { text: "… " + (d.total - d.problems.length) }));
          }
          importOut.appendChild(list);
        }, function (err) { importBtn.disabled = false; say(errText(err)); });
      }
      load();
    }

    // -- audit log
    function renderAudit() {
      var target = input("adm-audit-target", { maxlength: 100 });
      var actor = input("adm-audit-actor", { maxlength: 64 });
      var go = h("button", { type: "submit", "data-testid": "adm-audit-go", text: t("adm.audit.filter") });
      var tb = h("tbody");
      var more = h("button", { type: "button", cls: "okf-2", "data-testid": "adm-audit-more", text: t("f.more"), hidden: true });
      var fl = h("form", { "data-testid": "adm-audit-form" }, h("div", { cls: "okf-grid" },
        h("label", null, t("adm.audit.target"), target),
        h("label", null, t("adm.audit.actor"), actor),
        h("div", null, go)));
      body.appendChild(fl);
      body.appendChild(h("div", { cls: "okf-table" }, h("table", { "data-testid": "adm-audit" },
        th(["adm.audit.at", "adm.audit.actor", "adm.audit.action", "adm.audit.target", "adm.audit.address", "adm.audit.detail"]), tb)));
      body.appendChild(more);
      var before = null;
      function page(reset) {
        if (reset) { clear(tb); before = null; }
        var qs = ["limit=" + AUDIT_PAGE];
        if (before !== null) qs.push("before=" + encodeURIComponent(before));
        [["target", target], ["actor", actor]].forEach(function (p) {
          if (p[1].value.trim()) qs.push(p[0] + "=" + encodeURIComponent(p[1].value.trim()));
        });
        api("GET", API.audit + "?" + qs.join("&")).then(function (rows) {
          rows = rows || [];
          rows.forEach(function (r) {
            tb.appendChild(h("tr", { "data-audit": String(r.id) },
              h("td", { text: fmtTime(r.at) }),
              h("td", { text: r.actor || "" }),
              h("td", { text: r.action || "" }),
              h("td", { text: r.target || "" }),
              h("td", { text: r.address || "" }),
              h("td", { cls: "okf-text", text: r.detail && Object.keys(r.detail).length ? JSON.stringify(r.detail) : "" })));
          });
          if (rows.length) before = rows[rows.length - 1].id;
          more.hidden = rows.length < AUDIT_PAGE;
        }, function (err) { say(errText(err)); });
      }
      fl.addEventListener("submit", function (ev) { ev.preventDefault(); page(true); });
      more.addEventListener("click", function () { page(false); });
      page(true);
    }

    // -- settings: a form for each settings object the server has (fields by their JSON type)
    function renderSettings() {
      var found = 0, done = 0;
      var none = h("div", { cls: "okf-dim", "data-testid": "adm-settings-none", text: t("adm.settings.none"), hidden: true });
      body.appendChild(none);
      API.settings.forEach(function (s) {
        var box = h("div", { cls: "okf-box", "data-testid": "adm-settings-" + s.path.split("/").pop(), hidden: true });
        body.appendChild(box);
        api("GET", s.path).then(function (obj) {
          found++;
          box.hidden = false;
          if (s.escalation) escalationForm(box, s, obj); else settingsForm(box, s, obj);
        }, function (err) {
          if (err && err.status !== 404 && err.status !== 405) { box.hidden = false; box.appendChild(h("div", { cls: "okf-err", text: errText(err) })); found++; }
        }).then(function () { done++; if (done === API.settings.length && !found) none.hidden = false; });
      });
    }

    // The escalation policy: the township's (defaults from the configuration, changed here),
    // then overrides per village or household, each naming only what it changes.
    var POLICY = ["enabled", "t1_s", "t2_s", "order", "rounds"];
    function policyFields(values, blankInherits) {
      var f = {};
      var grid = h("div", { cls: "okf-grid" });
      POLICY.forEach(function (k) {
        var v = values[k];
        var el2;
        if (k === "enabled") {
          el2 = h("select", { "data-testid": "pol-" + k });
          if (blankInherits) el2.appendChild(h("option", { value: "", text: t("pol.inherit") }));
          el2.appendChild(h("option", { value: "true", text: t("f.yes") }));
          el2.appendChild(h("option", { value: "false", text: t("f.no") }));
          el2.value = v === undefined || v === null ? "" : String(v);
        } else if (k === "order") {
          el2 = h("input", { "data-testid": "pol-" + k, value: v ? v.join(", ") : "",
            placeholder: blankInherits ? t("pol.inherit") : "leader+grid, family, doctor" });
        } else {
          el2 = h("input", { type: "number", step: k === "rounds" ? "1" : "any", min: 1, "data-testid": "pol-" + k,
            value: v === undefined || v === null ? "" : String(v), placeholder: blankInherits ? t("pol.inherit") : "" });
        }
        f[k] = el2;
        grid.appendChild(h("label", null, t("pol." + k), el2));
      });
      function read() {
        var out = {};
        POLICY.forEach(function (k) {
          var raw = f[k].value.trim();
          if (raw === "") { if (!blankInherits && k !== "order") out[k] = null; return; }
          if (k === "enabled") out[k] = raw === "true";
          else if (k === "order") out[k] = raw.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
          else out[k] = Number(raw);
        });
        Object.keys(out).forEach(function (k) { if (out[k] === null) delete out[k]; });
        return out;
      }
      return { grid: grid, read: read };
    }

    function escalationForm(box, s, obj) {
      clear(box);
      obj = obj || {};
      var overrides = obj.overrides || [];
      var township = Object.assign({}, obj.defaults || {});
      overrides.forEach(function (o) { if (o.scope === "township") Object.assign(township, o.settings); });
      box.appendChild(h("h3", { text: t(s.key) }));
      box.appendChild(h("div", { cls: "okf-dim", text: t("pol.help") }));
      var town = policyFields(township, false);
      var saveTown = h("button", { type: "submit", "data-testid": "pol-save-township", text: t("f.save") });
      var townForm = h("form", { "data-testid": "pol-township" }, h("h3", { text: t("pol.township") }), town.grid, saveTown);
      townForm.addEventListener("submit", function (ev) {
        ev.preventDefault();
        api("PUT", s.path + "/township", town.read()).then(function () { say(t("f.saved"), true); reload(); },
          function (err) { say(errText(err)); });
      });
      box.appendChild(townForm);
      var tb = h("tbody");
      overrides.filter(function (o) { return o.scope !== "township"; }).forEach(function (o) {
        var parts = o.scope.split(":");
        var path = s.path + (parts[0] === "village" ? "/villages/" : "/households/") + encodeURIComponent(parts.slice(1).join(":"));
        tb.appendChild(h("tr", { "data-scope": o.scope },
          h("td", { text: o.scope }),
          h("td", { cls: "okf-text", text: JSON.stringify(o.settings) }),
          h("td", { text: (o.updated_by || "") + " " + fmtTime(o.updated_at) }),
          h("td", null, h("button", { type: "button", cls: "okf-2", text: t("adm.hh.remove"), on: { click: function () {
            api("DELETE", path).then(reload, function (err) { say(errText(err)); });
          } } }))));
      });
      box.appendChild(h("h3", { text: t("pol.overrides") }));
      box.appendChild(h("div", { cls: "okf-table" }, h("table", { "data-testid": "pol-overrides" },
        th(["pol.scope", "pol.settings", "pol.updated", "f.actions"]), tb)));
      var kind = h("select", { "data-testid": "pol-scope-kind" },
        h("option", { value: "villages", text: t("adm.hh.village") }), h("option", { value: "households", text: t("adm.hh.id") }));
      var which = h("input", { "data-testid": "pol-scope-id", maxlength: 64, required: true });
      var ov = policyFields({}, true);
      var addForm = h("form", { "data-testid": "pol-override" }, h("h3", { text: t("pol.add_override") }),
        h("div", { cls: "okf-grid" }, h("label", null, t("pol.scope"), kind), h("label", null, "id", which)), ov.grid,
        h("button", { type: "submit", text: t("f.save") }));
      addForm.addEventListener("submit", function (ev) {
        ev.preventDefault();
        if (!which.value.trim()) return;
        api("PUT", s.path + "/" + kind.value + "/" + encodeURIComponent(which.value.trim()), ov.read()).then(function () {
          say(t("f.saved"), true); reload();
        }, function (err) { say(errText(err)); });
      });
      box.appendChild(addForm);
      function reload() { api("GET", s.path).then(function (o) { escalationForm(box, s, o); }, function (err) { say(errText(err)); }); }
    }

    function settingsForm(box, s, obj) {
      clear(box);
      box.appendChild(h("h3", { text: t(s.key) }));
      var getters = {};
      var grid = h("div", { cls: "okf-grid" });
      Object.keys(obj || {}).forEach(function (k) {
        var v = obj[k];
        var label = t("set." + k) === "set." + k ? k : t("set." + k);
        var el2;
        var choices = s.choices && s.choices[k];
        if (choices) {
          el2 = h("select", { "data-testid": "set-" + k });
          choices.forEach(function (c) {
            var key = "set." + k + "." + c;
            el2.appendChild(h("option", { value: c, text: t(key) === key ? c : t(key) }));
          });
          el2.value = v;
          getters[k] = function () { return el2.value; };
          grid.appendChild(h("label", null, label, el2));
        } else if (typeof v === "boolean") {
          el2 = h("input", { type: "checkbox", "data-testid": "set-" + k, checked: v });
          getters[k] = function () { return el2.checked; };
          grid.appendChild(h("label", { cls: "okf-inline" }, el2, h("span", { text: label })));
        } else if (typeof v === "number") {
          el2 = h("input", { type: "number", step: "any", "data-testid": "set-" + k, value: String(v) });
          getters[k] = function () { return Number(el2.value); };
          grid.appendChild(h("label", null, label, el2));
        } else if (typeof v === "string") {
          el2 = h("input", { "data-testid": "set-" + k, value: v });
          getters[k] = function () { return el2.value; };
          grid.appendChild(h("label", null, label, el2));
        } else if (Array.isArray(v) && v.every(function (x) { return typeof x === "string"; })) {
          el2 = h("input", { "data-testid": "set-" + k, value: v.join(", ") });
          getters[k] = function () { return el2.value.split(",").map(function (x) { return x.trim(); }).filter(Boolean); };
          grid.appendChild(h("label", null, label, el2));
        } else {
          el2 = h("textarea", { "data-testid": "set-" + k, value: JSON.stringify(v, null, 1) });
          getters[k] = function () { return JSON.parse(el2.value); };
          grid.appendChild(h("label", { cls: "okf-wide" }, label + " (JSON)", el2));
        }
      });
      var save = h("button", { type: "submit", "data-testid": "set-save", text: t("f.save") });
      var f = h("form", null, grid, h("div", null, save));
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var out = {};
        try { Object.keys(getters).forEach(function (k) { out[k] = getters[k](); }); }
        catch (e) { say(t("f.error") + e.message); return; }
        api("PUT", s.path, out).then(function (back) { say(t("f.saved"), true); settingsForm(box, s, back || out); },
          function (err) { say(errText(err)); });
      });
      box.appendChild(f);
    }

    show("users");
    return {
      refresh: function () { if (current) show(current); },
      unmount: function () { clear(el); },
      destroy: function () { clear(el); }
    };
  }

  window.OkAdmin = { mount: mount };
})();

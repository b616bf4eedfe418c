// The Resource API's docs page (pepctl serve, /docs): reads /openapi.json from this server,
// lists every operation, and sends "try it out" requests with the pasted bearer token.
// Everything is built with DOM calls and textContent (no innerHTML): the page runs under a
// strict Content-Security-Policy (script-src 'self', Trusted Types required) and talks to
// this origin only.
"use strict";

(function () {
  var METHODS = ["get", "head", "post", "put", "patch", "delete", "options", "trace"];
  var BODYLESS = { get: true, head: true, delete: true, options: true, trace: true };
  var doc = null;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k === "text") node.textContent = String(v);
        else if (k === "className") node.className = v;
        else if (k === "hidden") node.hidden = true;
        else node.setAttribute(k, v === true ? "" : String(v));
      });
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function slug(s) {
    return s.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  }

  // A local "#/a/b" reference inside the document; anything else is left as it is.
  function deref(node) {
    var seen = 0;
    while (node && typeof node.$ref === "string" && node.$ref.indexOf("#/") === 0 && seen < 32) {
      var target = doc;
      node.$ref.slice(2).split("/").forEach(function (part) {
        part = part.replace(/~1/g, "/").replace(/~0/g, "~");
        target = target && typeof target === "object" ? target[part] : undefined;
      });
      if (target === undefined) return node;
      node = target;
      seen += 1;
    }
    return node;
  }

  // The schema with its local references expanded (a reference met again below itself is
  // left as {"$ref": ...}, so cycles end).
  function expand(schema, trail) {
    trail = trail || [];
    if (Array.isArray(schema)) return schema.map(function (s) { return expand(s, trail); });
    if (!schema || typeof schema !== "object") return schema;
    if (typeof schema.$ref === "string") {
      if (trail.indexOf(schema.$ref) >= 0) return { $ref: schema.$ref };
      return expand(deref(schema), trail.concat([schema.$ref]));
    }
    var out = {};
    Object.keys(schema).forEach(function (k) { out[k] = expand(schema[k], trail); });
    return out;
  }

  // A value of the schema's shape to start the request body from.
  function example(schema, depth) {
    schema = deref(schema) || {};
    depth = depth || 0;
    if (depth > 6) return null;
    if (schema.example !== undefined) return schema.example;
    if (schema.default !== undefined) return schema.default;
    if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
    switch (schema.type) {
      case "object": {
        var obj = {};
        var props = schema.properties || {};
        var required = schema.required || [];
        var keys = Object.keys(props);
        // Required fields first; optional ones too, so the body shows every field it may have.
        keys.sort(function (a, b) { return (required.indexOf(b) >= 0) - (required.indexOf(a) >= 0); });
        keys.forEach(function (k) { obj[k] = example(props[k], depth + 1); });
        return obj;
      }
      case "array":
        return [example(schema.items || {}, depth + 1)];
      case "integer":
      case "number":
        return 0;
      case "boolean":
        return false;
      case "string":
        return "";
      default:
        return schema.properties ? example({ type: "object", properties: schema.properties }, depth) : null;
    }
  }

  function jsonContent(content) {
    if (!content) return null;
    var type = Object.keys(content).filter(function (t) { return /json/i.test(t); })[0] || Object.keys(content)[0];
    return type ? { type: type, media: content[type] || {} } : null;
  }

  // Path-level parameters, overridden by the operation's own of the same name and place.
  function parametersOf(pathItem, op) {
    var byKey = {};
    var order = [];
    (pathItem.parameters || []).concat(op.parameters || []).forEach(function (p) {
      p = deref(p);
      if (!p || !p.name) return;
      var key = p.in + ":" + p.name;
      if (!(key in byKey)) order.push(key);
      byKey[key] = p;
    });
    return order.map(function (k) { return byKey[k]; });
  }

  function needsToken(op) {
    var security = op.security !== undefined ? op.security : doc.security;
    return Array.isArray(security) && security.some(function (req) { return req && Object.keys(req).length > 0; });
  }

  function schemaText(schema) {
    var s = deref(schema || {});
    if (!s) return "";
    var t = s.type || "";
    if (t === "array" && s.items) t = "array of " + (deref(s.items).type || "items");
    return t;
  }

  function renderParameters(params) {
    if (!params.length) return null;
    var rows = params.map(function (p) {
      return el("tr", { "data-param": p.name }, [
        el("td", { className: "param-name", text: p.name + (p.required ? " *" : "") }),
        el("td", { text: p.in }),
        el("td", { text: schemaText(p.schema) }),
        el("td", { text: p.description || "" }),
      ]);
    });
    return el("div", { className: "params" }, [
      el("h4", { text: "Parameters" }),
      el("table", null, [
        el("thead", null, [el("tr", null, [
          el("th", { text: "name" }), el("th", { text: "in" }), el("th", { text: "type" }), el("th", { text: "description" }),
        ])]),
        el("tbody", null, rows),
      ]),
    ]);
  }

  function renderBodySchema(body) {
    if (!body) return null;
    body = deref(body);
    var json = jsonContent(body.content);
    if (!json) return null;
    var ref = json.media.schema && json.media.schema.$ref ? json.media.schema.$ref.split("/").pop() : null;
    return el("div", { className: "request-body" }, [
      el("h4", { text: "Request body" + (body.required ? " (required)" : "") + ": " + json.type + (ref ? " — " + ref : "") }),
      el("pre", { className: "body-schema", text: JSON.stringify(expand(json.media.schema || {}), null, 2) }),
    ]);
  }

  function renderResponses(responses) {
    var codes = Object.keys(responses || {});
    if (!codes.length) return null;
    return el("div", { className: "responses" }, [
      el("h4", { text: "Responses" }),
      el("ul", null, codes.map(function (code) {
        var r = deref(responses[code]) || {};
        return el("li", null, [el("code", { text: code }), " " + (r.description || "")]);
      })),
    ]);
  }

  function renderTry(path, method, params, body, op) {
    var inputs = {};
    var fields = params.filter(function (p) { return p.in === "path" || p.in === "query" || p.in === "header"; })
      .map(function (p) {
        var id = "in-" + slug(method + " " + path + " " + p.in + " " + p.name);
        var input = el("input", { id: id, type: "text", "data-param": p.name, "data-in": p.in, spellcheck: "false",
                                  placeholder: p.required ? "required" : "optional" });
        inputs[p.in + ":" + p.name] = input;
        return el("div", { className: "field" }, [el("label", { for: id, text: p.name + " (" + p.in + ")" }), input]);
      });
    var bodyInput = null;
    var json = body ? jsonContent(deref(body).content) : null;
    if (json) {
      var bodyId = "body-" + slug(method + " " + path);
      bodyInput = el("textarea", { id: bodyId, className: "body-input", rows: "8", spellcheck: "false" });
      bodyInput.value = JSON.stringify(example(json.media.schema || {}), null, 2);
      fields.push(el("div", { className: "field" }, [el("label", { for: bodyId, text: "body (" + json.type + ")" }), bodyInput]));
    }
    var execute = el("button", { type: "button", className: "execute", text: "Execute" });
    var result = el("div", { className: "result", hidden: true }, [
      el("p", null, [el("span", { className: "status" }), " ", el("span", { className: "elapsed" })]),
      el("p", { className: "request-line" }),
      el("pre", { className: "response-body" }),
    ]);
    var panel = el("div", { className: "try-panel", hidden: true }, fields.concat([execute, result]));

    execute.addEventListener("click", function () {
      send(method, path, inputs, bodyInput, json, needsToken(op), execute, result);
    });
    return panel;
  }

  function buildUrl(path, inputs) {
    var missing = [];
    var url = path.replace(/\{([^}]+)\}/g, function (_, name) {
      var input = inputs["path:" + name];
      var v = input ? input.value : "";
      if (!v) missing.push(name);
      return encodeURIComponent(v);
    });
    var query = new URLSearchParams();
    Object.keys(inputs).forEach(function (k) {
      var input = inputs[k];
      if (input.getAttribute("data-in") === "query" && input.value !== "") query.append(input.getAttribute("data-param"), input.value);
    });
    var qs = query.toString();
    return { url: url + (qs ? "?" + qs : ""), missing: missing };
  }

  function show(result, status, statusClass, elapsed, line, bodyText) {
    var statusEl = result.querySelector(".status");
    statusEl.textContent = status;
    statusEl.className = "status " + statusClass;
    result.querySelector(".elapsed").textContent = elapsed;
    result.querySelector(".request-line").textContent = line;
    result.querySelector(".response-body").textContent = bodyText;
    result.hidden = false;
  }

  function send(method, path, inputs, bodyInput, json, withToken, button, result) {
    var built = buildUrl(path, inputs);
    var line = method.toUpperCase() + " " + built.url;
    if (built.missing.length) {
      show(result, "not sent", "error", "", line, "fill in the path parameter(s): " + built.missing.join(", "));
      return;
    }
    var headers = {};
    Object.keys(inputs).forEach(function (k) {
      var input = inputs[k];
      if (input.getAttribute("data-in") === "header" && input.value !== "") headers[input.getAttribute("data-param")] = input.value;
    });
    var token = document.getElementById("token").value.trim();
    if (withToken && token) headers.Authorization = "Bearer " + token;
    var init = { method: method.toUpperCase(), headers: headers, cache: "no-store", credentials: "omit", redirect: "manual" };
    if (bodyInput && !BODYLESS[method]) {
      var text = bodyInput.value.trim();
      if (text !== "") {
        try {
          JSON.parse(text);
        } catch (e) {
          show(result, "not sent", "error", "", line, "the body is not JSON: " + e.message);
          return;
        }
        headers["Content-Type"] = json.type;
        init.body = text;
      }
    }
    if (withToken && !token) line += "  (no token)";
    button.disabled = true;
    var started = performance.now();
    fetch(built.url, init).then(function (response) {
      return response.text().then(function (text) {
        var pretty = text;
        var type = response.headers.get("content-type") || "";
        if (/json/i.test(type) && text) {
          try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { pretty = text; }
        }
        var label = response.status === 0 ? "redirected (not followed)" : response.status + " " + (response.statusText || "");
        show(result, label.trim(), response.ok ? "ok" : "error", Math.round(performance.now() - started) + " ms",
             line + (type ? "  →  " + type : ""), pretty === "" ? "(empty body)" : pretty);
      });
    }).catch(function (e) {
      show(result, "request failed", "error", "", line, String(e && e.message ? e.message : e));
    }).then(function () {
      button.disabled = false;
    });
  }

  function renderOperation(path, pathItem, method) {
    var op = pathItem[method];
    var params = parametersOf(pathItem, op);
    var body = op.requestBody || null;
    var id = "op-" + method + "-" + slug(path);
    var toggle = el("button", { type: "button", className: "try", "aria-expanded": "false", text: "Try it out" });
    var panel = renderTry(path, method, params, body, op);
    toggle.addEventListener("click", function () {
      panel.hidden = !panel.hidden;
      toggle.setAttribute("aria-expanded", panel.hidden ? "false" : "true");
      toggle.textContent = panel.hidden ? "Try it out" : "Cancel";
    });
    return el("section", { className: "op method-" + method, id: id, "data-method": method, "data-path": path }, [
      el("div", { className: "op-head" }, [
        el("span", { className: "method", text: method.toUpperCase() }),
        el("code", { className: "path", text: path }),
        el("span", { className: "summary", text: op.summary || "" }),
        needsToken(op) ? el("span", { className: "lock", title: "needs a bearer token", text: "bearer" }) : null,
        toggle,
      ]),
      op.description ? el("p", { className: "description", text: op.description }) : null,
      renderParameters(params),
      renderBodySchema(body),
      renderResponses(op.responses),
      panel,
    ]);
  }

  function render() {
    var info = doc.info || {};
    document.getElementById("title").textContent = info.title || "API";
    document.title = (info.title || "API") + " — pepctl";
    document.getElementById("version").textContent = info.version ? "version " + info.version : "";
    document.getElementById("description").textContent = info.description || "";
    var ops = document.getElementById("ops");
    var count = 0;
    Object.keys(doc.paths || {}).forEach(function (path) {
      var pathItem = doc.paths[path] || {};
      METHODS.forEach(function (method) {
        if (pathItem[method] && typeof pathItem[method] === "object") {
          ops.appendChild(renderOperation(path, pathItem, method));
          count += 1;
        }
      });
    });
    var status = document.getElementById("status");
    status.textContent = count + " operations";
    status.setAttribute("data-state", "ready");
  }

  function fail(message) {
    var status = document.getElementById("status");
    status.textContent = "Could not load /openapi.json: " + message;
    status.setAttribute("data-state", "error");
    status.className = "error";
  }

  function init() {
    var token = document.getElementById("token");
    var showButton = document.getElementById("token-show");
    showButton.addEventListener("click", function () {
      var shown = token.type === "text";
      token.type = shown ? "password" : "text";
      showButton.textContent = shown ? "Show" : "Hide";
      showButton.setAttribute("aria-pressed", shown ? "false" : "true");
    });
    document.getElementById("token-clear").addEventListener("click", function () { token.value = ""; });
    // The token is only ever sent by "Execute": Enter in the field submits nothing.
    document.getElementById("auth-form").addEventListener("submit", function (e) { e.preventDefault(); });
    fetch("/openapi.json", { cache: "no-store", credentials: "omit" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (d) {
      doc = d;
      render();
    }).catch(function (e) {
      fail(e && e.message ? e.message : String(e));
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

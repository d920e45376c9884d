// The "try it" form of a prompt page: turns the form generated from the input schema (or the
// raw JSON) into a request body, calls the prompt's endpoint with the visitor's key, and shows
// the answer, or the problem with each error next to the field it points at.
// The key lives in sessionStorage only and is sent only to the API endpoint.
"use strict";

(function () {
  const KEY_STORAGE = "promptapi.key";
  let uid = 0;

  const escapePointer = (key) => String(key).replace(/~/g, "~0").replace(/\//g, "~1");
  const control = (field) => field.querySelector(":scope > .pa-input, :scope > .check-row > .pa-input");

  function childFields(field) {
    if (field.id === "form-mode") return Array.from(field.querySelectorAll(":scope > .pa-field"));
    return Array.from(field.querySelectorAll(":scope > fieldset > .pa-children > .pa-field"));
  }

  function itemFields(field) {
    return Array.from(field.querySelectorAll(":scope > fieldset > .pa-items > .pa-item > .pa-field"));
  }

  function addItem(field) {
    const template = field.querySelector(":scope > fieldset > template.pa-template");
    const clone = template.content.cloneNode(true);
    const suffix = `-n${++uid}`;
    const renamed = new Map();
    for (const el of clone.querySelectorAll("[id]")) {
      renamed.set(el.id, el.id + suffix);
      el.id += suffix;
    }
    for (const el of clone.querySelectorAll("label[for]")) {
      if (renamed.has(el.htmlFor)) el.htmlFor = renamed.get(el.htmlFor);
    }
    for (const el of clone.querySelectorAll("[aria-describedby]")) {
      const ids = el.getAttribute("aria-describedby").split(" ").map((id) => renamed.get(id) || id);
      el.setAttribute("aria-describedby", ids.join(" "));
    }
    const item = clone.querySelector(".pa-item");
    field.querySelector(":scope > fieldset > .pa-items").appendChild(clone);
    for (const inner of item.querySelectorAll(".pa-array")) initArray(inner);
    renumber(field);
    return item.querySelector(":scope > .pa-field");
  }

  function renumber(field) {
    const items = field.querySelectorAll(":scope > fieldset > .pa-items > .pa-item");
    items.forEach((item, i) => {
      const inner = item.querySelector(":scope > .pa-field");
      const title = inner.querySelector(
        ":scope > label, :scope > fieldset > legend, :scope > .check-row > label",
      );
      if (title) title.textContent = `${field.dataset.label} #${i + 1}`;
      const remove = item.querySelector(":scope > [data-remove] .sr-only");
      if (remove) remove.textContent = ` item ${i + 1} of ${field.dataset.label}`;
    });
  }

  function initArray(field) {
    const min = Number(field.querySelector(":scope > fieldset").dataset.minItems || 0);
    for (let i = itemFields(field).length; i < min; i++) addItem(field);
  }

  // -- form <-> value ---------------------------------------------------------------------

  function getValue(field, pointer, problems) {
    field.dataset.pointer = pointer;
    const kind = field.dataset.kind;
    const required = field.dataset.required === "true";
    if (kind === "object" || field.id === "form-mode") {
      const out = {};
      for (const child of childFields(field)) {
        const v = getValue(child, `${pointer}/${escapePointer(child.dataset.key)}`, problems);
        if (v !== undefined) out[child.dataset.key] = v;
      }
      return Object.keys(out).length || required || field.id === "form-mode" ? out : undefined;
    }
    if (kind === "array") {
      const out = itemFields(field).map((item, i) => getValue(item, `${pointer}/${i}`, problems));
      return out.length || required ? out.map((v) => (v === undefined ? null : v)) : undefined;
    }
    if (kind === "enum-set") {
      const out = Array.from(field.querySelectorAll("input[type=checkbox]:checked")).map((box) =>
        JSON.parse(box.value),
      );
      return out.length || required ? out : undefined;
    }
    const input = control(field);
    if (kind === "boolean") return input.checked;
    const raw = input.value;
    if (kind === "enum") return raw === "" ? undefined : JSON.parse(raw);
    if (kind === "number" || kind === "integer") {
      if (raw === "") {
        if (input.validity && input.validity.badInput) problems.push([pointer, "not a number"]);
        return undefined;
      }
      return Number(raw);
    }
    if (kind === "json") {
      if (raw.trim() === "") return undefined;
      try {
        return JSON.parse(raw);
      } catch (error) {
        problems.push([pointer, `not valid JSON: ${error.message}`]);
        return undefined;
      }
    }
    return raw === "" ? undefined : raw; // an empty box means "not given"
  }

  function setValue(field, value) {
    const kind = field.dataset.kind;
    if (kind === "object" || field.id === "form-mode") {
      for (const child of childFields(field)) {
        const v = value && typeof value === "object" ? value[child.dataset.key] : undefined;
        setValue(child, v);
      }
      return;
    }
    if (kind === "array") {
      for (const item of field.querySelectorAll(":scope > fieldset > .pa-items > .pa-item")) item.remove();
      if (Array.isArray(value)) for (const v of value) setValue(addItem(field), v);
      else initArray(field);
      return;
    }
    if (kind === "enum-set") {
      const wanted = new Set((Array.isArray(value) ? value : []).map((v) => JSON.stringify(v)));
      for (const box of field.querySelectorAll("input[type=checkbox]")) box.checked = wanted.has(box.value);
      return;
    }
    const input = control(field);
    if (kind === "boolean") input.checked = value === true;
    else if (kind === "enum") input.value = value === undefined ? "" : JSON.stringify(value);
    else if (kind === "json") input.value = value === undefined ? "" : JSON.stringify(value, null, 2);
    else input.value = value === undefined || value === null ? "" : String(value);
  }

  // -- errors -----------------------------------------------------------------------------

  function clearErrors(form) {
    for (const p of form.querySelectorAll(".pa-error")) {
      p.hidden = true;
      p.textContent = "";
    }
    for (const el of form.querySelectorAll("[aria-invalid]")) {
      el.removeAttribute("aria-invalid");
      const ids = (el.getAttribute("aria-describedby") || "").split(" ").filter((id) => !id.endsWith("-error"));
      if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
      else el.removeAttribute("aria-describedby");
    }
  }

  // Shows `message` at the field `pointer` names (or its nearest ancestor on the form) and
  // returns the element to focus.
  function placeError(form, pointer, message) {
    const root = form.querySelector("#form-mode");
    const fields = Array.from(form.querySelectorAll(".pa-field"));
    let target = null;
    let at = pointer;
    while (target === null) {
      target = fields.find((f) => f.dataset.pointer === at) || null;
      if (target || at === "") break;
      at = at.slice(0, at.lastIndexOf("/"));
    }
    const box = target ? target.querySelector(".pa-error") : form.querySelector("#root-error");
    const where = at === pointer ? "" : `${pointer.slice(at.length) || "/"}: `;
    const line = document.createElement("span");
    line.textContent = where + message;
    if (box.textContent) box.appendChild(document.createElement("br"));
    box.appendChild(line);
    box.hidden = false;
    const focusable = target
      ? target.querySelector(".pa-input, input, select, textarea, button")
      : root && root.querySelector(".pa-input, input, select, textarea");
    if (focusable) {
      focusable.setAttribute("aria-invalid", "true");
      const ids = (focusable.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      if (!ids.includes(box.id)) ids.push(box.id);
      focusable.setAttribute("aria-describedby", ids.join(" "));
    }
    return focusable;
  }

  // -- result panel -----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  function showAnswer(result, status, answer, roundTrip) {
    const output = typeof answer.output === "string" ? answer.output : JSON.stringify(answer.output, null, 2);
    const usage = answer.usage || {};
    const cost = usage.cost_usd === null || usage.cost_usd === undefined ? "—" : `$${usage.cost_usd}`;
    const facts = [
      ["Input tokens", usage.input_tokens],
      ["Output tokens", usage.output_tokens],
      ["Cost", cost],
      ["Latency", `${answer.latency_ms} ms`],
      ["Round trip", `${Math.round(roundTrip)} ms`],
      ["Model", answer.model],
      ["Version", answer.prompt ? `v${answer.prompt.version}` : "—"],
      ["Cached", answer.cached ? "yes" : "no"],
    ];
    const list = el("dl", { class: "facts", id: "result-usage" });
    for (const [k, v] of facts) list.append(el("div", {}, el("dt", {}, k), el("dd", {}, String(v ?? "—"))));
    result.className = "result ok";
    result.replaceChildren(
      el(
        "p",
        { class: "result-status" },
        el("span", { class: "badge ok" }, `${status} OK`),
        answer.mock ? el("span", { class: "badge" }, "mock model") : "",
        el("span", { class: "muted small" }, ` ${answer.id || ""}`),
      ),
      el("h3", {}, "Output"),
      el("pre", { class: "code" }, el("code", { id: "result-output" }, output)),
      el("h3", {}, "Usage"),
      list,
    );
  }

  function showProblem(result, status, problem, form, inForm) {
    result.className = "result bad";
    const list = el("ul", { class: "problems", id: "result-errors" });
    let first = null;
    for (const error of problem.errors || []) {
      const path = String(error.path ?? "");
      const item = el("li", {}, el("code", {}, path || "(body)"), " ", String(error.message ?? ""));
      list.append(item);
      if (inForm) {
        const target = placeError(form, path, String(error.message ?? ""));
        if (target && !target.id) target.id = `pa-target-${++uid}`;
        if (target) {
          const link = el("a", { href: `#${target.id}` }, "go to field");
          link.addEventListener("click", (event) => {
            event.preventDefault();
            target.focus();
          });
          item.append(" (", link, ")");
          first = first || target;
        }
      }
    }
    result.replaceChildren(
      el(
        "p",
        { class: "result-status" },
        el("span", { class: "badge bad" }, String(status)),
        " ",
        el("strong", { id: "result-title" }, String(problem.title || "Request failed")),
      ),
      el("p", { id: "result-detail" }, String(problem.detail || "")),
      list.childElementCount ? list : "",
      problem.request_id ? el("p", { class: "muted small" }, `Request id ${problem.request_id}`) : "",
    );
    return first;
  }

  // -- wiring -----------------------------------------------------------------------------

  function init() {
    const form = document.getElementById("tryit");
    if (!form) return;
    const formMode = document.getElementById("form-mode");
    const jsonMode = document.getElementById("json-mode");
    const raw = document.getElementById("raw-json");
    const rawError = document.getElementById("raw-json-error");
    const key = document.getElementById("api-key");
    const result = document.getElementById("result");
    const sending = document.getElementById("sending");
    const examples = JSON.parse(document.getElementById("examples-data").textContent || "[]");
    let exampleIndex = 0;

    key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    key.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, key.value.trim()));
    document.getElementById("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      key.value = "";
      key.focus();
    });

    if (formMode) {
      for (const field of formMode.querySelectorAll(".pa-array")) initArray(field);
    }
    const mode = () => form.querySelector("input[name=mode]:checked").value;

    form.addEventListener("click", (event) => {
      const add = event.target.closest("[data-add]");
      if (add) {
        const item = addItem(add.closest(".pa-field"));
        item.querySelector("input, select, textarea")?.focus();
        return;
      }
      const remove = event.target.closest("[data-remove]");
      if (remove) {
        const field = remove.closest(".pa-item").parentElement.closest(".pa-field");
        remove.closest(".pa-item").remove();
        renumber(field);
        field.querySelector(":scope > fieldset > [data-add]").focus();
      }
    });

    for (const radio of form.querySelectorAll("input[name=mode]")) {
      radio.addEventListener("change", () => {
        clearErrors(form);
        if (mode() === "json") {
          if (formMode) raw.value = JSON.stringify(getValue(formMode, "", []), null, 2);
          formMode && (formMode.hidden = true);
          jsonMode.hidden = false;
          return;
        }
        try {
          const parsed = JSON.parse(raw.value);
          setValue(formMode, parsed);
          formMode.hidden = false;
          jsonMode.hidden = true;
        } catch (error) {
          form.querySelector("input[name=mode][value=json]").checked = true;
          rawError.textContent = `Fix the JSON before switching to the form: ${error.message}`;
          rawError.hidden = false;
        }
      });
    }

    const useExample = document.getElementById("use-example");
    if (useExample) {
      useExample.addEventListener("click", () => {
        const value = examples[exampleIndex % examples.length];
        exampleIndex += 1;
        clearErrors(form);
        if (mode() === "form" && formMode) setValue(formMode, value);
        else raw.value = JSON.stringify(value, null, 2);
      });
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const inForm = mode() === "form" && formMode;
      let body;
      if (inForm) {
        const problems = [];
        body = getValue(formMode, "", problems);
        if (problems.length) {
          const targets = problems.map(([p, m]) => placeError(form, p, m));
          targets[0]?.focus();
          return;
        }
      } else {
        try {
          body = JSON.parse(raw.value);
        } catch (error) {
          rawError.textContent = `Not valid JSON: ${error.message}`;
          rawError.hidden = false;
          raw.setAttribute("aria-invalid", "true");
          raw.focus();
          return;
        }
      }
      const headers = { "Content-Type": "application/json", Accept: "application/json" };
      const token = key.value.trim();
      if (token) headers.Authorization = `Bearer ${token}`;
      const send = document.getElementById("send");
      send.disabled = true;
      sending.hidden = false;
      const started = performance.now();
      try {
        const response = await fetch(form.dataset.url, {
          method: "POST",
          headers,
          body: JSON.stringify(body),
          credentials: "omit",
          cache: "no-store",
        });
        const roundTrip = performance.now() - started;
        const text = await response.text();
        let answer;
        try {
          answer = JSON.parse(text);
        } catch {
          answer = { title: `HTTP ${response.status}`, detail: text.slice(0, 500) };
        }
        result.hidden = false;
        if (response.ok) showAnswer(result, response.status, answer, roundTrip);
        else {
          const first = showProblem(result, response.status, answer, form, Boolean(inForm));
          if (first) first.focus();
        }
      } catch (error) {
        result.hidden = false;
        result.className = "result bad";
        result.replaceChildren(el("p", {}, `Could not reach the server: ${error.message}`));
      } finally {
        send.disabled = false;
        sending.hidden = true;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", init);
})();

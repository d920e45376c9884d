// The catalog's small enhancements: instant filtering (same rules as the server's ?q=&tag=&model=),
// copy buttons, and tabs for the code snippets. Every page works without this file.
"use strict";

(function () {
  function instantFilter() {
    const form = document.querySelector("[data-filter-form]");
    const cards = Array.from(document.querySelectorAll("[data-entry]"));
    const count = document.getElementById("count");
    const none = document.getElementById("no-match");
    if (!form || !cards.length) return;
    const control = (name) => form.querySelector(`[data-filter="${name}"]`);

    function apply() {
      const q = (control("q")?.value || "").trim().toLowerCase();
      const tag = control("tag")?.value || "";
      const model = control("model")?.value || "";
      const terms = q.split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const card of cards) {
        const tags = (card.dataset.tags || "").split(" ").filter(Boolean);
        const ok =
          (!tag || tags.includes(tag)) &&
          (!model || card.dataset.model === model) &&
          terms.every((t) => card.dataset.search.includes(t));
        card.hidden = !ok;
        if (ok) shown += 1;
      }
      const total = cards.length;
      count.textContent =
        shown === total
          ? `${total} prompt API${total === 1 ? "" : "s"}`
          : `${shown} of ${total} prompt APIs match`;
      if (none) none.hidden = shown !== 0;
      const params = new URLSearchParams();
      if (q) params.set("q", control("q").value.trim());
      if (tag) params.set("tag", tag);
      if (model) params.set("model", model);
      const query = params.toString();
      history.replaceState(null, "", query ? `/?${query}` : "/");
    }

    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      apply();
    });
  }

  function copyButtons() {
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", async () => {
        const source = document.querySelector(button.dataset.copy);
        if (!source) return;
        const text = source.textContent;
        let done = false;
        try {
          await navigator.clipboard.writeText(text);
          done = true;
        } catch {
          const range = document.createRange();
          range.selectNodeContents(source);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          done = document.execCommand && document.execCommand("copy");
        }
        const label = button.firstChild;
        const before = label.textContent;
        label.textContent = done ? "Copied" : "Press Ctrl+C";
        setTimeout(() => (label.textContent = before), 1500);
      });
    }
  }

  function tabs() {
    for (const box of document.querySelectorAll("[data-tabs]")) {
      const panels = Array.from(box.querySelectorAll(".tab-panel"));
      if (panels.length < 2) continue;
      const list = document.createElement("div");
      list.setAttribute("role", "tablist");
      list.className = "tablist";
      const buttons = panels.map((panel, i) => {
        const tab = document.createElement("button");
        tab.type = "button";
        tab.id = `${panel.id}-tab`;
        tab.className = "tab";
        tab.setAttribute("role", "tab");
        tab.setAttribute("aria-controls", panel.id);
        tab.textContent = panel.dataset.tabTitle;
        panel.setAttribute("role", "tabpanel");
        panel.setAttribute("aria-labelledby", tab.id);
        panel.querySelector(".tab-heading")?.classList.add("sr-only");
        list.appendChild(tab);
        tab.addEventListener("click", () => select(i, false));
        tab.addEventListener("keydown", (event) => {
          const moves = { ArrowRight: 1, ArrowLeft: -1 };
          if (event.key in moves) {
            select((i + moves[event.key] + panels.length) % panels.length, true);
            event.preventDefault();
          } else if (event.key === "Home" || event.key === "End") {
            select(event.key === "Home" ? 0 : panels.length - 1, true);
            event.preventDefault();
          }
        });
        return tab;
      });
      function select(index, focus) {
        buttons.forEach((tab, i) => {
          const on = i === index;
          tab.setAttribute("aria-selected", String(on));
          tab.tabIndex = on ? 0 : -1;
          panels[i].hidden = !on;
        });
        if (focus) buttons[index].focus();
      }
      box.prepend(list);
      box.classList.add("tabs-on");
      select(0, false);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    instantFilter();
    copyButtons();
    tabs();
  });
})();

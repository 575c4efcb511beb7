/* The pricing calculator, live: recomputes chat/pricing.py's monthly_costs as the fields change.
 *
 * Prices arrive as whole ten-thousandths of a dollar (per 1M tokens), so every figure
 * is an exact BigInt and rounds to the cent half up, as the server does: the page shows
 * the same numbers with or without JavaScript. Without it the form simply submits. */
(function () {
  "use strict";

  var form = document.getElementById("calculator");
  var configNode = document.getElementById("pricing-config");
  if (!form || !configNode || typeof BigInt !== "function") return;
  var config = JSON.parse(configNode.textContent);
  var FIELDS = ["tasks", "input_tokens", "output_tokens", "cheap_share"];
  var BOTH_ZERO = "A task uses at least one token: enter input or output tokens.";

  function big(n) { return BigInt(n); }

  // Per task, in units of 1e-10 USD: tokens x (USD per 1M tokens x 1e4).
  function perTask(prices, input, output) {
    return big(input) * big(prices.input_e4) + big(output) * big(prices.output_e4);
  }

  // Round half up: value / unit, to whole cents, for non-negative BigInts.
  function cents(value, unit) { return (value + unit / 2n) / unit; }

  function usd(value, unit) {
    var c = cents(value, unit);
    if (c === 0n) return value > 0n ? "under $0.01" : "$0.00";
    var whole = (c / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    var frac = (c % 100n).toString().padStart(2, "0");
    return "$" + whole + "." + frac;
  }

  function costs(tasks, mix) {
    var cheap = perTask(config.cheap, mix.input_tokens, mix.output_tokens);
    var flagship = perTask(config.flagship, mix.input_tokens, mix.output_tokens);
    var share = big(mix.cheap_share);
    var t = big(tasks);
    var auto = t * (share * cheap + (100n - share) * flagship);  // units of 1e-12 USD
    var flat = big(config.flat_cents);
    var autoCents = cents(auto, 10000000000n);
    var diff = autoCents > flat ? autoCents - flat : flat - autoCents;
    return {
      flagship: usd(t * flagship, 100000000n),
      cheap: usd(t * cheap, 100000000n),
      auto: usd(auto, 10000000000n),
      flat: usd(flat * 100000000n, 100000000n),
      autoBelowFlat: autoCents <= flat,
      autoVsFlat: usd(diff * 100000000n, 100000000n),
    };
  }

  function readField(name) {
    var input = form.elements[name];
    var raw = input.value.trim();
    var min = Number(input.min), max = Number(input.max);
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      return { input: input, error: input.getAttribute("data-error") };
    }
    return { input: input, value: Number(raw) };
  }

  function showError(input, message) {
    var box = document.getElementById(input.id + "_error");
    var field = input.closest(".field");
    if (message) {
      box.textContent = message;
      box.hidden = false;
      input.setAttribute("aria-invalid", "true");
      field.classList.add("has-error");
    } else {
      box.textContent = "";
      box.hidden = true;
      input.removeAttribute("aria-invalid");
      field.classList.remove("has-error");
    }
  }

  function setAll(root, selector, text) {
    root.querySelectorAll(selector).forEach(function (node) { node.textContent = text; });
  }

  function fill(root, figures) {
    ["flagship", "cheap", "auto", "flat"].forEach(function (key) {
      setAll(root, '[data-cost="' + key + '"]', figures[key]);
    });
  }

  function recompute() {
    var mix = {}, ok = true;
    FIELDS.forEach(function (name) {
      var read = readField(name);
      showError(read.input, read.error || "");
      if (read.error) ok = false; else mix[name] = read.value;
    });
    if (ok && mix.input_tokens === 0 && mix.output_tokens === 0) {
      showError(form.elements.output_tokens, BOTH_ZERO);
      ok = false;
    }
    var cards = document.getElementById("cost-cards");
    var verdict = document.getElementById("calc-verdict");
    var invalid = document.getElementById("calc-invalid");
    cards.hidden = verdict.hidden = !ok;
    invalid.hidden = ok;
    if (!ok) return;

    var figures = costs(mix.tasks, mix);
    fill(cards, figures);
    fill(verdict, figures);
    verdict.querySelector("[data-verdict-amount]").textContent = figures.autoVsFlat;
    verdict.querySelector("[data-verdict-word]").textContent = figures.autoBelowFlat ? "less" : "more";
    setAll(document, "[data-share]", String(mix.cheap_share));
    setAll(document, "[data-mix-input]", mix.input_tokens.toLocaleString("en-US"));
    setAll(document, "[data-mix-output]", mix.output_tokens.toLocaleString("en-US"));
    document.querySelectorAll("tr[data-tasks]").forEach(function (row) {
      fill(row, costs(Number(row.getAttribute("data-tasks")), mix));
    });
  }

  form.addEventListener("input", recompute);
})();

/* Panels chat page: conversations, the composer, and replies streamed over SSE.
 *
 * Model text is untrusted: while a reply streams it is only ever written with
 * text nodes; once it settles it is replaced by the HTML the server rendered and
 * sanitised (chat/markdown.py). Nothing here builds HTML from strings.
 */
(function () {
  "use strict";

  var configNode = document.getElementById("chat-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);

  var API = config.api_base.replace(/\/$/, "");
  var $ = function (id) { return document.getElementById(id); };
  var chatRoot = $("chat");
  var log = $("chat-log");
  var emptyState = $("chat-empty");
  var form = $("composer");
  var input = $("composer-input");
  var select = $("model-select");
  var modelHelp = $("model-help");
  var sendButton = $("send-button");
  var stopButton = $("stop-button");
  var attachButton = $("attach-button");
  var attachInput = $("attach-input");
  var attachPreview = $("attach-preview");
  var attachHelp = $("attach-help");
  var alertBox = $("chat-alert");
  var statusRegion = $("chat-status");
  var titleNode = $("chat-title");
  var list = $("conversation-list");
  var sidebarToggle = $("sidebar-toggle");
  var deleteDialog = $("delete-dialog");

  // Set when "Top up your wallet" is followed from a refused message (see describeError).
  var RETURN_KEY = "panels:return-after-topup";
  var RETURN_FOR_MS = 2 * 60 * 60 * 1000;

  // Back from a top-up to a new chat (the top-up page's way back, or the menu): the
  // conversation the refused message was for, where its draft waits.
  (function returnAfterTopup() {
    var back = null;
    try { back = JSON.parse(sessionGet(RETURN_KEY) || "null"); } catch (e) { back = null; }
    if (!back) return;
    sessionSet(RETURN_KEY, "");
    var fresh = typeof back.at === "number" && Date.now() - back.at < RETURN_FOR_MS;
    if (fresh && !config.conversation_id && /^\/chat\/c\/\d+\/$/.test(back.url || "")) {
      window.location.replace(back.url);
    }
  })();

  var modelsBySlug = {};
  config.models.forEach(function (m) { modelsBySlug[m.slug] = m; });

  var state = {
    conversationId: config.conversation_id,
    cost: config.conversation_cost || 0, // credits the conversation's replies were charged
    sending: false,
    active: null, // the reply being streamed: {id, view, ...}
    attachment: null, // {name, dataUrl, size}
  };

  /* ---------- small helpers ---------- */

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function announce(text) {
    // Clear first so the same words said twice are announced twice.
    statusRegion.textContent = "";
    setTimeout(function () { statusRegion.textContent = text; }, 50);
  }

  function formatInt(n) { return Number(n).toLocaleString("en-US"); }

  // The site's one money format (panels/money.py): $12.35 from a dollar up, below it
  // four significant digits ($0.6397, $0.01205, $0.0000005).
  function formatUsd(credits) {
    var usd = Number(credits) / config.credits_per_usd;
    var sign = usd < 0 ? "-" : "";
    usd = Math.abs(usd);
    if (usd >= 1 || usd === 0) {
      return sign + "$" + usd.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    }
    var text = usd.toFixed(3 - Math.floor(Math.log10(usd))).replace(/0+$/, "");
    var parts = text.split(".");
    return sign + "$" + parts[0] + "." + (parts[1] || "").padEnd(2, "0");
  }

  function chatUrl(conversationId) { return config.conversation_url.replace("{id}", String(conversationId)); }

  function nearBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 80; }
  function scrollToBottom() { log.scrollTop = log.scrollHeight; }

  /* ---------- the API ---------- */

  function ApiError(status, code, message, detail) {
    this.status = status;
    this.code = code;
    this.message = message;
    this.detail = detail || {};
  }

  function fallbackMessage(status) {
    if (status >= 500) return "The server had a problem (error " + status + "). Please try again in a moment.";
    if (status === 429) return "Too many requests. Please wait a moment and try again.";
    if (status === 401 || status === 403) return "You are not signed in any more. Reload the page to sign in again.";
    return "The request failed (error " + status + ").";
  }

  function api(method, path, body, headers) {
    var options = { method: method, credentials: "same-origin", headers: Object.assign({ Accept: "application/json" }, headers) };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    if (method !== "GET") options.headers["X-CSRFToken"] = config.csrf_token;
    return fetch(API + path, options).then(
      function (response) {
        if (response.status === 204) return null;
        return response.json().then(
          function (data) { return { response: response, data: data }; },
          function () { return { response: response, data: null }; }
        ).then(function (r) {
          if (r.response.ok) return r.data;
          var err = (r.data && r.data.error) || {};
          throw new ApiError(r.response.status, err.code || "http_" + r.response.status,
            err.message || fallbackMessage(r.response.status), err);
        });
      },
      function () {
        throw new ApiError(0, "network", "Could not reach Panels. Check your connection and try again.");
      }
    );
  }

  /* ---------- alerts ---------- */

  function hideAlert() {
    alertBox.hidden = true;
    alertBox.replaceChildren();
  }

  // Fills `box` with a readable explanation of `err`, with a way forward where there is one.
  function describeError(err, box) {
    var text = make("p", "alert-text");
    if (err.code === "insufficient_credits") {
      var needed = err.detail.needed;
      var available = err.detail.available;
      if (typeof needed === "number" && typeof available === "number") {
        text.append("Not enough credits: this message can cost up to " + formatInt(needed) +
          " credits (" + formatUsd(needed) + ") and your wallet has " + formatInt(available) + " available. ");
      } else {
        text.append((err.message || "Not enough credits for this message.") + " ");
      }
      var link = make("a", "alert-link", "Top up your wallet");
      link.href = err.detail.topup_url || config.topup_url;
      // After paying, the way back to chat leads here again; the draft waits in this tab.
      link.addEventListener("click", function () {
        sessionSet(RETURN_KEY, JSON.stringify({ url: window.location.pathname, at: Date.now() }));
      });
      text.append(link);
    } else if (err.code === "wallet_frozen") {
      text.textContent = (err.message || "Your wallet is frozen.") +
        " New messages are paused until support resolves it; nothing was charged.";
    } else if (err.status === 0 || err.status >= 500) {
      text.textContent = err.message + " Your message was not sent and is still in the box.";
    } else {
      text.textContent = err.message;
    }
    box.append(text);
  }

  function showError(err) {
    hideAlert();
    describeError(err, alertBox);
    var close = make("button", "link alert-close", "Dismiss");
    close.type = "button";
    close.addEventListener("click", function () { hideAlert(); input.focus(); });
    alertBox.append(close);
    alertBox.className = "alert error chat-alert" + (err.code === "insufficient_credits" ? " credits" : "");
    alertBox.hidden = false;
  }

  function showNotice(text) {
    showError({ status: 400, code: "notice", message: text });
  }

  /* ---------- the header balance ---------- */

  function updateBalance(balance) {
    var credits = null;
    if (typeof balance === "number") credits = balance;
    else if (balance && typeof balance === "object") {
      credits = typeof balance.available === "number" ? balance.available : balance.balance;
    }
    if (typeof credits !== "number") return;
    var header = $("header-balance");
    if (!header) return;
    var creditsNode = header.querySelector("[data-balance-credits]");
    var usdNode = header.querySelector("[data-balance-usd]");
    if (creditsNode) creditsNode.textContent = formatInt(credits);
    if (usdNode) usdNode.textContent = formatUsd(credits);
  }

  /* ---------- the model dropdown ---------- */

  function storageGet(key) { try { return window.localStorage.getItem(key); } catch (e) { return null; } }
  function storageSet(key, value) { try { window.localStorage.setItem(key, value); } catch (e) { /* private mode */ } }
  function sessionGet(key) { try { return window.sessionStorage.getItem(key); } catch (e) { return null; } }
  function sessionSet(key, value) {
    try {
      if (value) window.sessionStorage.setItem(key, value); else window.sessionStorage.removeItem(key);
    } catch (e) { /* private mode */ }
  }

  function modelKey(conversationId) { return "panels:model:" + conversationId; }
  function draftKey() { return "panels:draft:" + (state.conversationId || "new"); }

  function selectable(value) {
    var option = select.querySelector('option[value="' + CSS.escape(value) + '"]');
    return option && !option.disabled ? option : null;
  }

  function selectedModel() { return modelsBySlug[select.value] || null; }

  function imagesAllowed() {
    if (select.value === "auto") return !!config.auto_images.allowed;
    var m = selectedModel();
    return !!(m && m.available && m.image_input);
  }

  // Why the image button is off, in words on the page (a disabled button can't be focused
  // to reveal a tooltip).
  function imagesBlockedReason() {
    if (select.value === "auto") return config.auto_images.why;
    var m = selectedModel();
    return (m ? m.name : "The selected model") + " does not read images. Pick a model that does to attach one.";
  }

  function onModelChange() {
    var option = select.options[select.selectedIndex];
    modelHelp.textContent = option ? option.getAttribute("data-help") || "" : "";
    if (state.conversationId) storageSet(modelKey(state.conversationId), select.value);
    var allowed = imagesAllowed();
    attachButton.disabled = !allowed;
    attachButton.title = allowed ? "Attach an image" : imagesBlockedReason();
    attachHelp.textContent = allowed ? "" : imagesBlockedReason();
    attachHelp.hidden = allowed;
    if (state.attachment && !allowed) {
      showNotice("The selected model cannot read images: remove the image or pick a model that can.");
    }
  }

  function restoreModel() {
    var remembered = state.conversationId ? storageGet(modelKey(state.conversationId)) : null;
    var choice = (remembered && selectable(remembered)) || selectable(config.initial_model) || selectable("auto");
    if (choice) select.value = choice.value;
    onModelChange();
  }

  /* ---------- image attachment ---------- */

  function clearAttachment() {
    state.attachment = null;
    attachInput.value = "";
    attachPreview.replaceChildren();
    attachPreview.hidden = true;
  }

  function showAttachment() {
    attachPreview.replaceChildren();
    var img = make("img");
    img.src = state.attachment.dataUrl;
    img.alt = "Attached image " + state.attachment.name;
    var name = make("span", "attach-name", state.attachment.name);
    var remove = make("button", "link danger", "Remove image");
    remove.type = "button";
    remove.addEventListener("click", function () { clearAttachment(); attachButton.focus(); });
    attachPreview.append(img, name, remove);
    attachPreview.hidden = false;
  }

  function onAttach() {
    var file = attachInput.files && attachInput.files[0];
    if (!file) return;
    if (config.image_types.indexOf(file.type) < 0) {
      attachInput.value = "";
      showNotice("That file is not a supported image. Use PNG, JPEG, GIF or WebP.");
      return;
    }
    if (file.size > config.max_image_bytes) {
      attachInput.value = "";
      showNotice("That image is " + (file.size / 1048576).toFixed(1) + " MB; images can be at most " +
        (config.max_image_bytes / 1048576).toFixed(0) + " MB. Try a smaller or compressed copy.");
      return;
    }
    var reader = new FileReader();
    reader.onload = function () {
      state.attachment = { name: file.name, dataUrl: String(reader.result), size: file.size };
      hideAlert();
      showAttachment();
    };
    reader.onerror = function () { showNotice("That image could not be read. Try another file."); };
    reader.readAsDataURL(file);
  }

  /* ---------- copy ---------- */

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    // Plain http on another host than localhost has no clipboard API: the old way.
    return new Promise(function (resolve, reject) {
      var area = make("textarea", "visually-hidden");
      area.value = text;
      area.setAttribute("readonly", "");
      document.body.append(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      if (ok) resolve(); else reject(new Error("copy refused"));
    });
  }

  function copyButton(label, name, getText) {
    var button = make("button", "link copy-button", label);
    button.type = "button";
    if (name) button.setAttribute("aria-label", name);
    button.addEventListener("click", function () {
      copyText(getText()).then(function () {
        button.textContent = "Copied";
        clearTimeout(button.copiedTimer);
        button.copiedTimer = setTimeout(function () { button.textContent = label; }, 2000);
        announce("Copied.");
      }, function () {
        showNotice("Your browser did not allow copying. Select the text and copy it instead.");
      });
    });
    return button;
  }

  // What Copy puts on the clipboard: the text as written (a reply's Markdown, not its HTML).
  function messageSource(article) {
    var source = article.getAttribute("data-source");
    if (source !== null) return source;
    return article.querySelector(".msg-body").textContent;
  }

  function decorateCode(body) {
    body.querySelectorAll("pre").forEach(function (pre) {
      if (pre.parentNode.classList.contains("code-block")) return;
      var wrap = make("div", "code-block");
      pre.parentNode.insertBefore(wrap, pre);
      wrap.append(copyButton("Copy code", null, function () { return pre.textContent; }), pre);
    });
  }

  // Adds the buttons that need this script to a message: Copy, and Copy code on code blocks.
  function decorate(article) {
    var actions = article.querySelector(".msg-actions");
    if (!actions) {
      actions = make("div", "msg-actions");
      article.append(actions);
    }
    actions.querySelectorAll(".copy-button").forEach(function (b) { b.remove(); });
    var user = article.classList.contains("msg-user");
    var status = article.getAttribute("data-status");
    if (!user && status !== "done" && status !== "cancelled") return;
    var body = article.querySelector(".msg-body");
    if (!user) decorateCode(body);
    actions.querySelectorAll(".revise-button").forEach(function (b) { b.remove(); });
    if (user && article.getAttribute("data-message-id")) {
      actions.append(reviseButton("Edit", "Edit what you wrote", function () { startEdit(article); }));
    } else if (!user) {
      // A reply the provider cut off (a dropped stream, out of time) gets a Retry; any reply can
      // be regenerated. Both ask for a new reply in its place.
      var cut = article.getAttribute("data-error-code") === "incomplete";
      actions.append(reviseButton(cut ? "Retry" : "Regenerate", cut ? "Retry the cut-off reply" : "Regenerate the reply",
        function (button) { regenerate(article, button); }));
    }
    if (!messageSource(article).trim()) return;
    actions.prepend(copyButton("Copy", user ? "Copy what you wrote" : "Copy the reply", function () {
      return messageSource(article);
    }));
  }

  function reviseButton(label, name, onClick) {
    var button = make("button", "link revise-button", label);
    button.type = "button";
    button.setAttribute("aria-label", name);
    button.addEventListener("click", function () { onClick(button); });
    return button;
  }

  /* ---------- messages in the log ---------- */

  function hideEmptyState() { if (emptyState) emptyState.hidden = true; }

  function appendUserMessage(text, attachmentUrl, id) {
    hideEmptyState();
    var article = make("article", "msg msg-user");
    if (id) {
      article.id = "message-" + id;
      article.setAttribute("data-message-id", id);
    }
    article.append(make("span", "visually-hidden", "You said:"));
    var body = make("div", "msg-body", text);
    article.append(body);
    [].concat(attachmentUrl || []).forEach(function (url) {
      var img = make("img", "msg-image");
      img.src = url;
      img.alt = "Image you attached";
      article.append(img);
    });
    log.append(article);
    decorate(article);
    scrollToBottom();
  }

  function modelName(slug, fallback) {
    var m = modelsBySlug[slug];
    return m ? m.name : fallback || slug || "the model";
  }

  // The API gives an error as {code, message}; the stream's error event has the same shape.
  function errorText(error) {
    if (!error) return "";
    if (typeof error === "string") return error;
    return error.message || error.code || "";
  }

  // A failure's reason may already say "Nothing was charged"; the page says it once (chat/views.py).
  function failureReason(error) {
    return errorText(error).replace(/[\s;,.]*\bnothing was charged\b[^.]*\.?/gi, "").trim().replace(/[.\s]+$/, "");
  }

  // Auto's reason with a typographic arrow: "Auto → GPT-4o mini: classification or tagging".
  function routeLine(routedBy) { return String(routedBy || "").replace(/ -> /g, " → "); }

  // The view of one assistant reply: its article, body and meta line.
  function viewFor(article) {
    return {
      article: article,
      body: article.querySelector(".msg-body"),
      meta: article.querySelector(".msg-meta"),
      actions: article.querySelector(".msg-actions"),
    };
  }

  function appendAssistantMessage(message) {
    hideEmptyState();
    var article = make("article", "msg msg-assistant");
    article.id = "message-" + message.id;
    article.setAttribute("data-message-id", message.id);
    article.setAttribute("data-status", message.status || "queued");
    article.append(make("span", "visually-hidden msg-who", "Reply from " + modelName(message.model) + ":"));
    var body = make("div", "msg-body");
    article.append(body, make("p", "msg-meta"), make("div", "msg-actions"));
    log.append(article);
    scrollToBottom();
    return viewFor(article);
  }

  function setBusy(view, busy) {
    view.article.setAttribute("aria-busy", busy ? "true" : "false");
    view.article.classList.toggle("streaming", busy);
  }

  function renderMeta(view, message) {
    view.meta.replaceChildren();
    var parts = [];
    var name = modelName(message.model, message.model_name);
    if (message.routed_by && /^(Auto|Ask the flagship) /.test(message.routed_by)) {
      // The line already names the model: "Auto → GPT-4o mini: classification or tagging".
      parts.push(make("span", "meta-route", routeLine(message.routed_by)));
    } else if (message.routed_by) {
      parts.push(make("span", "meta-model", "Auto chose " + name));
      parts.push(make("span", "meta-route", "why: " + routeLine(message.routed_by)));
    } else {
      parts.push(make("span", "meta-model", name));
    }
    if (message.input_tokens !== null && message.input_tokens !== undefined) {
      parts.push(make("span", "meta-tokens",
        formatInt(message.input_tokens) + " in / " + formatInt(message.output_tokens || 0) + " out tokens"));
    }
    if (message.cost !== null && message.cost !== undefined) {
      parts.push(make("span", "meta-cost", formatInt(message.cost) + " credits (" + formatUsd(message.cost) + ")"));
    }
    if (message.usage_estimated) {
      var est = make("span", "meta-estimated", "estimated");
      est.title = "The provider did not report usage, so this reply was billed on an estimate.";
      parts.push(est);
    }
    if (message.status === "cancelled") parts.push(make("span", "meta-stopped", "stopped"));
    var note = errorText(message.error);
    if (note) parts.push(make("span", "meta-note", note));
    parts.forEach(function (part, i) {
      if (i) view.meta.append(document.createTextNode(" · "));
      view.meta.append(part);
    });
  }

  function renderFailure(view, message) {
    view.body.replaceChildren();
    var p = make("p", "msg-error");
    var reason = failureReason(message.error) || "the model did not answer";
    p.textContent = "This reply failed: " + reason + ". You were not charged.";
    view.body.append(p);
    view.meta.replaceChildren();
    view.actions.replaceChildren();
    var retry = make("button", "secondary small retry-button", "Retry");
    retry.type = "button";
    retry.addEventListener("click", function () { retryMessage(view, retry); });
    view.actions.append(retry);
  }

  function renderSettled(view, message) {
    var wasRunning = view.article.getAttribute("aria-busy") === "true";
    if (wasRunning && typeof message.cost === "number") addCost(message.cost);
    view.article.setAttribute("data-status", message.status);
    setBusy(view, false);
    if (message.status === "failed") {
      renderFailure(view, message);
      return;
    }
    if (typeof message.html === "string") {
      // Server-rendered and sanitised (chat/markdown.py): the one place model text becomes HTML.
      view.body.innerHTML = message.html;
    } else {
      view.body.textContent = message.content || "";
    }
    if (!view.body.textContent.trim() && message.status === "cancelled") {
      view.body.replaceChildren(make("p", "muted", "Stopped before any text was written."));
    }
    view.article.setAttribute("data-source", message.content || "");
    view.article.setAttribute("data-error-code", (message.error && message.error.code) || "");
    view.actions.replaceChildren();
    renderMeta(view, message);
    offerFlagship(view, message);
    decorate(view.article);
  }

  /* ---------- streaming ---------- */

  // Redis stream ids look like "1712345678901-0"; an id not after the last one
  // seen is a repeat (a reconnect that overlapped) and is dropped.
  function idAfter(id, last) {
    if (!last) return true;
    var a = /^(\d+)-(\d+)$/.exec(id);
    var b = /^(\d+)-(\d+)$/.exec(last);
    if (a && b) {
      if (a[1].length !== b[1].length) return a[1].length > b[1].length;
      if (a[1] !== b[1]) return a[1] > b[1];
      return Number(a[2]) > Number(b[2]);
    }
    if (/^\d+$/.test(id) && /^\d+$/.test(last)) return Number(id) > Number(last);
    return id !== last;
  }

  // Reads a text/event-stream body and calls onEvent({type, data, id}) per event.
  function readEvents(body, onEvent) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var event = { type: "", data: [], id: null };

    function dispatch() {
      if (event.data.length) onEvent({ type: event.type || "message", data: event.data.join("\n"), id: event.id });
      event = { type: "", data: [], id: null };
    }

    function line(text) {
      if (text === "") { dispatch(); return; }
      if (text.charAt(0) === ":") return;
      var colon = text.indexOf(":");
      var field = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.charAt(0) === " ") value = value.slice(1);
      if (field === "event") event.type = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id" && value.indexOf("\0") < 0) event.id = value;
    }

    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) return;
        buffer += decoder.decode(chunk.value, { stream: true });
        var match;
        var re = /\r\n|\n|\r/g;
        var start = 0;
        while ((match = re.exec(buffer)) !== null) {
          // A lone "\r" at the very end may be half of "\r\n": wait for more.
          if (match[0] === "\r" && match.index === buffer.length - 1) break;
          line(buffer.slice(start, match.index));
          start = match.index + match[0].length;
        }
        buffer = buffer.slice(start);
        return pump();
      });
    }
    return pump();
  }

  function setStreamingUi(streaming) {
    stopButton.hidden = !streaming;
    stopButton.disabled = false;
    sendButton.hidden = streaming;
    if (!streaming && document.activeElement === stopButton) input.focus();
  }

  function fetchMessage(id) { return api("GET", "/messages/" + id); }

  // When the stream cannot tell us the outcome, ask for the message itself.
  function settleFromServer(stream) {
    var delays = [0, 500, 1000, 2000, 3000, 5000, 5000, 5000];
    var attempt = 0;
    function next() {
      if (attempt >= delays.length) {
        showNotice("The reply is taking long to arrive. Reload the page to check on it.");
        return Promise.resolve(null);
      }
      return sleep(delays[attempt++]).then(function () { return fetchMessage(stream.id); }).then(
        function (message) {
          if (message.status === "done" || message.status === "failed" || message.status === "cancelled") {
            renderSettled(stream.view, message);
            return message;
          }
          return next();
        },
        function (err) {
          if (err.status === 404) {
            stream.view.body.textContent = "This reply no longer exists.";
            setBusy(stream.view, false);
            return null;
          }
          return next();
        }
      );
    }
    return next();
  }

  function handleEvent(stream, event) {
    if (event.id) {
      if (!idAfter(event.id, stream.lastEventId)) return;
      stream.lastEventId = event.id;
    }
    var data = {};
    try { data = event.data ? JSON.parse(event.data) : {}; } catch (e) { data = {}; }
    if (event.type === "delta") {
      if (!stream.textNode) {
        stream.view.body.replaceChildren();
        stream.textNode = document.createTextNode("");
        stream.view.body.append(stream.textNode);
        stream.view.article.setAttribute("data-status", "streaming");
        announce("The reply is being written.");
      }
      var stick = nearBottom();
      // A text node: model text is never parsed as HTML while it streams.
      stream.textNode.appendData(typeof data.text === "string" ? data.text : "");
      stream.received += 1;
      if (stick) scrollToBottom();
    } else if (event.type === "done") {
      stream.finished = true;
      stream.final = data;
      // The header shows what is available to spend (balance less other replies' holds).
      updateBalance(typeof data.available === "number" ? data.available : data.balance);
    } else if (event.type === "error") {
      stream.finished = true;
      stream.error = data;
    }
  }

  function openStream(stream) {
    var headers = { Accept: "text/event-stream" };
    if (stream.lastEventId) headers["Last-Event-ID"] = stream.lastEventId;
    return fetch(API + "/messages/" + stream.id + "/stream", {
      credentials: "same-origin",
      headers: headers,
      cache: "no-store",
      signal: stream.abort.signal,
    }).then(function (response) {
      if (!response.ok) {
        var err = new Error("stream answered " + response.status);
        err.status = response.status;
        throw err;
      }
      stream.view.article.classList.remove("reconnecting");
      return readEvents(response.body, function (event) {
        stream.attempts = 0;
        handleEvent(stream, event);
      });
    });
  }

  function streamReply(id, view) {
    var stream = {
      id: id,
      view: view,
      lastEventId: null,
      textNode: null,
      received: 0,
      attempts: 0,
      finished: false,
      abort: new AbortController(),
    };
    state.active = stream;
    var streamConversation = state.conversationId;
    markRunning(streamConversation, true);
    setBusy(view, true);
    setStreamingUi(true);
    if (!view.body.firstChild) view.body.append(make("span", "typing", "Waiting for the model…"));

    function loop() {
      if (stream.finished) return Promise.resolve();
      return openStream(stream).then(
        function () {
          if (stream.finished) return null;
          // The connection closed before the reply ended: resume after the last event.
          return reconnect();
        },
        function (err) {
          if (err && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
            stream.finished = true; // no stream to read (gone, or not ours): ask for the message
            return null;
          }
          return reconnect();
        }
      ).then(loop);
    }

    function reconnect() {
      stream.attempts += 1;
      if (stream.attempts > 8) {
        stream.finished = true;
        return null;
      }
      view.article.classList.add("reconnecting");
      return sleep(Math.min(250 * Math.pow(2, stream.attempts - 1), 5000));
    }

    return loop().then(function () {
      view.article.classList.remove("reconnecting");
      if (stream.error) {
        return fetchMessage(id).then(
          function (message) {
            if (message.status === "failed" || message.status === "done" || message.status === "cancelled") {
              renderSettled(view, message);
            } else {
              renderFailure(view, { error: stream.error });
            }
          },
          function () { renderFailure(view, { error: stream.error }); }
        );
      }
      return settleFromServer(stream);
    }).then(function () {
      var status = view.article.getAttribute("data-status");
      if (status === "done" || status === "cancelled") {
        announce("Reply finished. " + view.meta.textContent);
      } else if (status === "failed") {
        announce("The reply failed. " + view.body.textContent);
      }
    }, function (err) {
      showError(err instanceof ApiError ? err : new ApiError(0, "network", "The reply could not be loaded."));
    }).then(function () {
      if (state.active === stream) state.active = null;
      markRunning(streamConversation, false);
      setStreamingUi(false);
    });
  }

  function stopReply() {
    var stream = state.active;
    if (!stream) return;
    stopButton.disabled = true;
    // The button is about to go away: the focus goes back to the message box.
    input.focus();
    announce("Stopping the reply.");
    api("POST", "/messages/" + stream.id + "/cancel").catch(function (err) {
      // 409: it finished first; the stream will say how.
      if (err.status !== 409) { stopButton.disabled = false; showError(err); }
    });
  }

  function retryMessage(view, button) {
    if (state.active || state.sending) {
      showNotice("Wait for the current reply to finish, or stop it, before retrying.");
      return;
    }
    var id = view.article.getAttribute("data-message-id");
    button.disabled = true;
    hideAlert();
    var path = "/messages/" + id + "/retry";
    api("POST", path, undefined, sendKeyFor(path, null)).then(function (message) {
      sendKeyDone();
      view.actions.replaceChildren();
      view.meta.replaceChildren();
      view.body.replaceChildren();
      view.article.id = "message-" + message.id;
      view.article.setAttribute("data-message-id", message.id);
      view.article.setAttribute("data-status", message.status || "queued");
      streamReply(message.id, view);
    }, function (err) {
      sendKeyDone(err);
      button.disabled = false;
      showError(err);
    });
  }

  /* ---------- the conversation: cost, settings, export ---------- */

  function addCost(credits) {
    state.cost += credits;
    var box = $("conversation-cost");
    box.querySelector("[data-cost]").textContent = formatInt(state.cost) + " credits (" + formatUsd(state.cost) + ")";
    box.hidden = state.cost <= 0;
  }

  function settingsBody() {
    var temperature = $("temperature").value.trim();
    return { system_prompt: $("system-prompt").value, temperature: temperature === "" ? null : temperature };
  }

  function showExportLinks() {
    var base = API + "/conversations/" + state.conversationId + "/export?as=";
    $("export-markdown").href = base + "markdown";
    $("export-json").href = base + "json";
    $("export-links").hidden = !state.conversationId;
  }

  $("settings-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var note = $("settings-status");
    var field = $("temperature");
    if (!field.checkValidity()) {
      note.textContent = "The temperature must be a number from 0 to 2.";
      field.focus();
      return;
    }
    if (!state.conversationId) {
      // A new chat: the settings go with the conversation its first message makes.
      note.textContent = "Saved: used from your first message.";
      return;
    }
    note.textContent = "Saving…";
    api("PATCH", "/conversations/" + state.conversationId, settingsBody()).then(function () {
      note.textContent = "Saved: the next replies use these settings.";
    }, function (err) {
      note.textContent = "";
      showError(err);
    });
  });

  /* ---------- the sidebar: search and replies still being written ---------- */

  var searchBox = $("conversation-search");
  var searchStatus = $("search-status");
  var fullList = null; // the sidebar as it was before a search
  var searchTimer = null;
  var searchSeq = 0;

  function conversationItem(conversation) {
    var li = $("conversation-item-template").content.firstElementChild.cloneNode(true);
    li.setAttribute("data-conversation-id", conversation.id);
    if (conversation.running) li.setAttribute("data-running", "true");
    var link = li.querySelector(".conversation-link");
    link.href = chatUrl(conversation.id);
    link.textContent = conversation.title || "New chat";
    if (String(conversation.id) === String(state.conversationId)) link.setAttribute("aria-current", "page");
    if (conversation.snippet) link.append(make("span", "search-snippet", conversation.snippet));
    labelItemButtons(li);
    return li;
  }

  function runSearch() {
    var q = searchBox.value.trim();
    var seq = ++searchSeq;
    if (!q) {
      if (fullList) { list.replaceChildren.apply(list, fullList); fullList = null; }
      searchStatus.hidden = true;
      return;
    }
    api("GET", "/conversations?q=" + encodeURIComponent(q)).then(function (found) {
      if (seq !== searchSeq) return; // a newer search is on its way
      if (!fullList) fullList = Array.prototype.slice.call(list.children);
      list.replaceChildren.apply(list, found.map(conversationItem));
      searchStatus.textContent = found.length ? found.length + (found.length === 1 ? " conversation matches" : " conversations match") +
        " “" + q + "”." : "No conversation matches “" + q + "”.";
      searchStatus.hidden = false;
    }, function (err) { if (seq === searchSeq) showError(err); });
  }

  searchBox.addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 250);
  });
  searchBox.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && searchBox.value) { e.preventDefault(); searchBox.value = ""; runSearch(); }
  });

  function markRunning(conversationId, running) {
    var li = itemFor(conversationId);
    if (!li) return;
    if (running) li.setAttribute("data-running", "true"); else li.removeAttribute("data-running");
  }

  // Replies still being written in other conversations (another tab, or left mid-reply): the
  // marker goes once they end. One small request every few seconds, only while there are any.
  var pollTimer = null;
  function watchBackground() {
    clearTimeout(pollTimer);
    var others = Array.prototype.filter.call(list.querySelectorAll("li[data-running]"), function (li) {
      return li.getAttribute("data-conversation-id") !== String(state.conversationId);
    });
    if (!others.length) return;
    pollTimer = setTimeout(function () {
      api("GET", "/conversations").then(function (all) {
        var running = {};
        all.forEach(function (c) { if (c.running) running[c.id] = true; });
        others.forEach(function (li) {
          if (!running[li.getAttribute("data-conversation-id")]) li.removeAttribute("data-running");
        });
      }, function () { /* try again on the next round */ }).then(watchBackground);
    }, 4000);
  }

  /* ---------- edit and regenerate ---------- */

  // Both replace the conversation from a point on (chat/services.py): the messages after
  // it leave the page, and the new reply streams in at the end.
  function busyNotice() {
    if (!state.active && !state.sending) return false;
    showNotice("Wait for the current reply to finish, or stop it, first.");
    return true;
  }

  function removeFrom(article) {
    while (article.nextElementSibling) article.nextElementSibling.remove();
    article.remove();
  }

  function regenerate(article, button) {
    if (busyNotice()) return;
    var id = article.getAttribute("data-message-id");
    var path = "/messages/" + id + "/regenerate";
    var body = {};
    button.disabled = true;
    hideAlert();
    state.sending = true;
    api("POST", path, body, sendKeyFor(path, body)).then(function (message) {
      sendKeyDone();
      state.sending = false;
      removeFrom(article);
      var view = appendAssistantMessage(message);
      announce("Writing a new reply.");
      input.focus();
      streamReply(message.id, view);
    }, function (err) {
      sendKeyDone(err);
      state.sending = false;
      button.disabled = false;
      showError(err);
    });
  }

  function startEdit(article) {
    if (busyNotice()) return;
    var body = article.querySelector(".msg-body");
    var actions = article.querySelector(".msg-actions");
    var editForm = make("form", "edit-form");
    var id = article.getAttribute("data-message-id");
    var label = make("label", "visually-hidden", "Edit your message");
    var field = make("textarea");
    field.id = "edit-" + id;
    field.rows = 3;
    field.value = body.textContent;
    label.htmlFor = field.id;
    var note = make("p", "helptext", "Sending replaces this message and everything after it with a new reply " +
      "from the model picked below. What earlier replies cost stays charged.");
    var save = make("button", "small", "Send");
    save.type = "submit";
    var cancel = make("button", "secondary small", "Cancel");
    cancel.type = "button";
    var buttons = make("div", "edit-actions");
    buttons.append(cancel, save);
    editForm.append(label, field, note, buttons);
    body.hidden = true;
    actions.hidden = true;
    article.classList.add("editing");
    body.after(editForm);
    field.focus();

    function close() {
      editForm.remove();
      body.hidden = false;
      actions.hidden = false;
      article.classList.remove("editing");
    }

    cancel.addEventListener("click", function () {
      close();
      var edit = actions.querySelector(".revise-button");
      if (edit) edit.focus();
    });
    field.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); cancel.click(); }
    });
    editForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var content = field.value.trim();
      if (!content || state.sending || state.active) return;
      var option = select.options[select.selectedIndex];
      if (!option || option.disabled) {
        showNotice("Pick an available model first.");
        return;
      }
      var path = "/messages/" + id + "/edit";
      var payload = { content: content, model: select.value };
      save.disabled = true;
      state.sending = true;
      hideAlert();
      api("POST", path, payload, sendKeyFor(path, payload)).then(function (message) {
        sendKeyDone();
        state.sending = false;
        var images = Array.prototype.map.call(article.querySelectorAll("img.msg-image"), function (img) { return img.src; });
        removeFrom(article);
        appendUserMessage(content, images, message.user_message);
        var view = appendAssistantMessage(message);
        moveConversationToTop(state.conversationId);
        input.focus();
        streamReply(message.id, view);
      }, function (err) {
        sendKeyDone(err);
        state.sending = false;
        save.disabled = false;
        showError(err);
        field.focus();
      });
    });
  }

  /* ---------- ask the flagship: an Auto reply's second answer ---------- */

  // A settled Auto reply from a cheaper model offers "Ask the flagship": the same
  // message again on the flagship tier, with its own hold, appended as a new reply.
  function offerFlagship(view, message) {
    if (!message.escalatable || document.querySelector('[data-escalation-of="' + message.id + '"]')) return;
    var button = make("button", "secondary small ask-flagship-button", "Ask the flagship");
    button.type = "button";
    button.title = "Answer this message again with the flagship model, as a second answer (charged separately).";
    view.actions.append(button);
  }

  function askFlagship(button) {
    if (state.active || state.sending) {
      showNotice("Wait for the current reply to finish, or stop it, before asking the flagship.");
      return;
    }
    var article = button.closest("article");
    button.disabled = true;
    hideAlert();
    api("POST", "/messages/" + article.getAttribute("data-message-id") + "/escalate").then(function (reply) {
      button.remove();
      var existing = document.getElementById("message-" + reply.id);
      if (existing) { existing.scrollIntoView({ block: "nearest" }); return; }
      var view = appendAssistantMessage({ id: reply.id, model: reply.model, status: reply.status });
      view.article.setAttribute("data-escalation-of", article.getAttribute("data-message-id"));
      streamReply(reply.id, view);
    }, function (err) {
      button.disabled = false;
      showError(err);
    });
  }

  log.addEventListener("click", function (event) {
    var button = event.target.closest(".ask-flagship-button");
    if (button && !button.disabled) askFlagship(button);
  });

  /* ---------- sending ---------- */

  // One Idempotency-Key per message: sending the same message again after a network
  // error (the first request may have arrived) reuses it, so the server answers the first
  // send instead of storing and charging a second. Any answer from the server ends the key.
  var pendingSend = null;

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Array.prototype.map.call(crypto.getRandomValues(new Uint8Array(16)), function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function sendKeyFor(path, body) {
    var what = path + "\n" + JSON.stringify(body);
    if (!pendingSend || pendingSend.what !== what) pendingSend = { what: what, key: newKey() };
    return { "Idempotency-Key": pendingSend.key };
  }

  function sendKeyDone(err) {
    if (!err || err.status !== 0) pendingSend = null;
  }

  function titleFrom(text) {
    var line = text.replace(/\s+/g, " ").trim();
    return line.length > 60 ? line.slice(0, 57) + "…" : line || "New chat";
  }

  // Moves the draft kept for this tab from one conversation key to another.
  function switchConversation(conversationId) {
    var draft = input.value;
    sessionSet(draftKey(), "");
    state.conversationId = conversationId;
    sessionSet(draftKey(), draft);
  }

  function ensureConversation(content) {
    if (state.conversationId) return Promise.resolve(null);
    var body = settingsBody();
    body.title = titleFrom(content);
    return api("POST", "/conversations", body).then(function (conversation) {
      switchConversation(conversation.id);
      showExportLinks();
      chatRoot.setAttribute("data-conversation-id", conversation.id);
      storageSet(modelKey(conversation.id), select.value);
      history.replaceState(null, "", chatUrl(conversation.id));
      addConversationItem(conversation);
      setTitle(conversation.title || titleFrom(content));
      return conversation;
    });
  }

  // The first message of a new conversation was refused (no credits, a bad request): the
  // conversation made for it goes, so no empty one stays named after the unsent text.
  // A network or server error leaves it: the message may have arrived, and the next try
  // goes to the same conversation.
  function undoConversation(conversation) {
    return api("DELETE", "/conversations/" + conversation.id).then(function () {
      if (String(state.conversationId) !== String(conversation.id)) return;
      switchConversation(null);
      chatRoot.removeAttribute("data-conversation-id");
      storageSet(modelKey(conversation.id), "");
      history.replaceState(null, "", config.new_chat_url);
      $("export-links").hidden = true;
      var li = itemFor(conversation.id);
      if (li) li.remove();
      if (!list.querySelector("li")) list.append(make("li", "empty-list muted", "No conversations yet."));
      setTitle("New chat");
    }, function () { /* kept: the next send uses it */ });
  }

  function send() {
    if (state.sending) return;
    if (state.active) {
      showNotice("Wait for this reply to finish, or press Stop, before sending the next message.");
      return;
    }
    var content = input.value.trim();
    if (!content) {
      input.focus();
      return;
    }
    var option = select.options[select.selectedIndex];
    if (!option || option.disabled) {
      showNotice("Pick an available model first.");
      select.focus();
      return;
    }
    if (state.attachment && !imagesAllowed()) {
      showNotice("The selected model cannot read images: remove the image or pick a model that can.");
      return;
    }
    var model = select.value;
    var attachment = state.attachment;
    state.sending = true;
    sendButton.disabled = true;
    hideAlert();
    announce("Sending.");
    var created = null;
    ensureConversation(content).then(function (conversation) {
      created = conversation;
      var body = { content: content, model: model };
      if (attachment) body.attachments = [{ type: "image", url: attachment.dataUrl }];
      var path = "/conversations/" + state.conversationId + "/messages";
      return api("POST", path, body, sendKeyFor(path, body));
    }).then(function (message) {
      sendKeyDone();
      // Accepted: only now is the draft cleared.
      input.value = "";
      sessionSet(draftKey(), "");
      clearAttachment();
      appendUserMessage(content, attachment && attachment.dataUrl, message.user_message);
      var view = appendAssistantMessage(message);
      moveConversationToTop(state.conversationId);
      state.sending = false;
      sendButton.disabled = false;
      input.focus();
      streamReply(message.id, view);
    }, function (err) {
      sendKeyDone(err);
      var refused = err.status >= 400 && err.status < 500;
      (created && refused ? undoConversation(created) : Promise.resolve()).then(function () {
        state.sending = false;
        sendButton.disabled = false;
        // The alert says why; the status line must not stay on "Sending.".
        announce("Your message was not sent.");
        showError(err);
        input.focus();
      });
    });
  }

  /* ---------- the sidebar ---------- */

  function setTitle(title) {
    titleNode.textContent = title;
    document.title = title + " · Panels";
  }

  function itemFor(conversationId) {
    return list.querySelector('li[data-conversation-id="' + CSS.escape(String(conversationId)) + '"]');
  }

  function addConversationItem(conversation) {
    var empty = list.querySelector(".empty-list");
    if (empty) empty.remove();
    var template = $("conversation-item-template");
    var li = template.content.firstElementChild.cloneNode(true);
    li.setAttribute("data-conversation-id", conversation.id);
    var link = li.querySelector(".conversation-link");
    link.href = chatUrl(conversation.id);
    link.textContent = conversation.title || "New chat";
    link.setAttribute("aria-current", "page");
    list.querySelectorAll('[aria-current="page"]').forEach(function (a) { a.removeAttribute("aria-current"); });
    labelItemButtons(li);
    list.prepend(li);
  }

  function moveConversationToTop(conversationId) {
    var li = itemFor(conversationId);
    if (li && li !== list.firstElementChild) list.prepend(li);
  }

  function labelItemButtons(li) {
    var title = li.querySelector(".conversation-link").textContent;
    li.querySelector(".rename-button").setAttribute("aria-label", "Rename “" + title + "”");
    li.querySelector(".delete-button").setAttribute("aria-label", "Delete “" + title + "”");
  }

  function startRename(li) {
    var link = li.querySelector(".conversation-link");
    var old = link.textContent;
    var renameForm = make("form", "rename-form");
    var label = make("label", "visually-hidden", "New title");
    var field = make("input");
    field.type = "text";
    field.maxLength = 200;
    field.value = old;
    field.required = true;
    field.id = "rename-" + li.getAttribute("data-conversation-id");
    label.htmlFor = field.id;
    renameForm.append(label, field);
    link.hidden = true;
    li.classList.add("renaming");
    li.insertBefore(renameForm, link);
    field.focus();
    field.select();
    var done = false;

    function finish(save) {
      if (done) return;
      done = true;
      var title = field.value.trim();
      renameForm.remove();
      link.hidden = false;
      li.classList.remove("renaming");
      link.focus();
      if (!save || !title || title === old) return;
      var id = li.getAttribute("data-conversation-id");
      link.textContent = title;
      api("PATCH", "/conversations/" + id, { title: title }).then(function (conversation) {
        var saved = (conversation && conversation.title) || title;
        link.textContent = saved;
        labelItemButtons(li);
        if (String(state.conversationId) === String(id)) setTitle(saved);
        announce("Renamed to " + saved + ".");
      }, function (err) {
        link.textContent = old;
        showError(err);
      });
    }

    renameForm.addEventListener("submit", function (e) { e.preventDefault(); finish(true); });
    field.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); finish(false); }
    });
    field.addEventListener("blur", function () { finish(true); });
  }

  function confirmDelete(li) {
    var title = li.querySelector(".conversation-link").textContent;
    $("delete-dialog-title-text").textContent = title;
    deleteDialog.returnValue = "";
    deleteDialog.onclose = function () {
      if (deleteDialog.returnValue !== "delete") {
        li.querySelector(".delete-button").focus();
        return;
      }
      var id = li.getAttribute("data-conversation-id");
      api("DELETE", "/conversations/" + id).then(function () {
        storageSet(modelKey(id), "");
        if (String(state.conversationId) === String(id)) {
          window.location.assign(config.new_chat_url);
          return;
        }
        var next = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        announce("Deleted “" + title + "”.");
        var focusTarget = next && next.querySelector(".conversation-link");
        (focusTarget || $("new-chat")).focus();
      }, function (err) {
        showError(err);
        li.querySelector(".delete-button").focus();
      });
    };
    deleteDialog.showModal();
    $("delete-cancel").focus();
  }

  var sidebarTimer = null;

  function setSidebar(open) {
    chatRoot.classList.add("sidebar-animating");
    clearTimeout(sidebarTimer);
    sidebarTimer = setTimeout(function () { chatRoot.classList.remove("sidebar-animating"); }, 300);
    chatRoot.classList.toggle("sidebar-open", open);
    $("sidebar-backdrop").hidden = !open;
    sidebarToggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      var first = $("chat-sidebar").querySelector("a, button");
      if (first) first.focus();
    }
  }

  /* ---------- wiring ---------- */

  form.addEventListener("submit", function (e) { e.preventDefault(); send(); });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  input.addEventListener("input", function () { sessionSet(draftKey(), input.value); });
  select.addEventListener("change", onModelChange);
  stopButton.addEventListener("click", stopReply);
  attachButton.addEventListener("click", function () { attachInput.click(); });
  attachInput.addEventListener("change", onAttach);
  sidebarToggle.addEventListener("click", function () {
    setSidebar(!chatRoot.classList.contains("sidebar-open"));
  });
  $("sidebar-backdrop").addEventListener("click", function () {
    setSidebar(false);
    sidebarToggle.focus();
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && chatRoot.classList.contains("sidebar-open")) {
      setSidebar(false);
      sidebarToggle.focus();
    }
  });
  list.addEventListener("click", function (e) {
    var button = e.target.closest("button");
    if (!button) return;
    var li = button.closest("li[data-conversation-id]");
    if (!li) return;
    if (button.classList.contains("rename-button")) startRename(li);
    else if (button.classList.contains("delete-button")) confirmDelete(li);
  });
  deleteDialog.addEventListener("click", function (e) {
    var button = e.target.closest("button[value]");
    if (button) {
      e.preventDefault();
      deleteDialog.close(button.value);
    }
  });
  log.querySelectorAll(".retry-button").forEach(function (button) {
    button.addEventListener("click", function () {
      retryMessage(viewFor(button.closest("article")), button);
    });
  });

  restoreModel();
  var draft = sessionGet(draftKey());
  if (draft && !input.value) input.value = draft;

  // A reply still being written when the page loaded (a reload mid-stream): resume it.
  var pending = log.querySelector('article.msg-assistant[data-status="queued"], article.msg-assistant[data-status="streaming"]');
  if (pending) {
    streamReply(pending.getAttribute("data-message-id"), viewFor(pending));
  }

  log.querySelectorAll("article.msg").forEach(decorate);
  watchBackground();

  // The skip link leads to the message box, past the conversation list.
  var skip = document.querySelector("a.skip");
  if (skip) {
    skip.href = "#composer-input";
    skip.textContent = "Skip to the message box";
    skip.addEventListener("click", function (e) { e.preventDefault(); input.focus(); });
  }

  var target = window.location.hash && document.getElementById(window.location.hash.slice(1));
  if (target && log.contains(target)) {
    target.scrollIntoView({ block: "center" });
    target.classList.add("highlight");
  } else {
    scrollToBottom();
    input.focus({ preventScroll: true });
  }
  chatRoot.classList.add("ready");
})();

// Copy buttons: <button data-copy="ID"> copies the value (or text) of element ID.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    var status = button.parentNode.querySelector("[data-copy-status]");
    function said(words) { if (status) status.textContent = words; }
    function fallback() {
      source.focus();
      if (source.select) source.select();
      said(document.execCommand && document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy.");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { said("Copied."); }, fallback);
    } else {
      fallback();
    }
  });
})();

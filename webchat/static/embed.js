// One script tag puts the assistant on an intranet page:
//   <script src="https://assistant.example.com/webchat/embed.js" defer></script>
// Optional: data-label="Ask HR" (button text). The chat runs in an iframe from the assistant's
// own origin (sign-in, tokens and CSP stay there); the page must be listed in
// WEBCHAT_TRUSTED_ORIGINS to be allowed to frame it.
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || !script.src) return;
  var origin = new URL(script.src).origin;
  var japanese = /^ja\b/i.test(navigator.language || '');
  var label = script.getAttribute('data-label') || (japanese ? 'アシスタントに質問' : 'Ask the assistant');
  var closeLabel = japanese ? 'チャットを閉じる' : 'Close the chat';

  var button = document.createElement('button');
  button.type = 'button';
  button.textContent = label;
  button.setAttribute('aria-expanded', 'false');
  Object.assign(button.style, {
    position: 'fixed', right: '1.5rem', bottom: '1.5rem', zIndex: '2147483000',
    padding: '0.75rem 1.25rem', borderRadius: '2rem', border: '0', cursor: 'pointer',
    background: '#2b3a67', color: '#fff', font: '600 1rem system-ui, sans-serif',
    boxShadow: '0 2px 8px rgba(0,0,0,.3)'
  });

  var frame = null;
  function open() {
    if (!frame) {
      frame = document.createElement('iframe');
      frame.src = origin + '/?embed=1';
      frame.title = label;
      frame.setAttribute('allow', 'clipboard-write');
      Object.assign(frame.style, {
        position: 'fixed', right: '1.5rem', bottom: '5rem', width: '400px', height: '600px',
        maxWidth: 'calc(100vw - 3rem)', maxHeight: 'calc(100vh - 7rem)', border: '1px solid #ccc',
        borderRadius: '0.5rem', background: '#fff', zIndex: '2147483000',
        boxShadow: '0 4px 16px rgba(0,0,0,.3)'
      });
      document.body.appendChild(frame);
    }
    frame.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    button.textContent = closeLabel;
    frame.focus();
  }
  function close() {
    if (frame) frame.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    button.textContent = label;
    button.focus();
  }
  button.addEventListener('click', function () {
    if (frame && !frame.hidden) close(); else open();
  });
  // Escape on the host page closes the chat when it is for the widget: the host's own controls
  // (a menu, a dialog, a search box) keep theirs, and the focus stays where the host put it.
  window.addEventListener('keydown', function (event) {
    if (event.key !== 'Escape' || event.defaultPrevented || !frame || frame.hidden) return;
    var active = document.activeElement;
    if (active && active !== button && active !== document.body) return;
    close();
  });
  // Escape pressed inside the chat, which the frame passes on (the host page never sees it).
  window.addEventListener('message', function (event) {
    if (!frame || frame.hidden || event.source !== frame.contentWindow) return;
    if (event.origin === origin && event.data && event.data.assistant === 'close') close();
  });
  function mount() { document.body.appendChild(button); }
  if (document.body) mount(); else document.addEventListener('DOMContentLoaded', mount);
})();

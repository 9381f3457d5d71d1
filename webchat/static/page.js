// The chat page: stock Bot Framework Web Chat (served by this app) against the built-in
// Direct Line endpoint or Azure Bot Service's, as /api/directline/token decides.
(function () {
  'use strict';

  var FEEDBACK_EVENT = 'webchat:activity-status/feedback';
  var STRINGS = {
    en: {
      simulator: 'Replies come from a local simulator, not a real model.',
      signIn: 'Please sign in to use the assistant.',
      unavailable: 'The assistant is not available right now. Please try again later.',
      feedbackLabel: 'Thank you. Tell us more (optional):',
      feedbackSend: 'Send comment',
      feedbackSkip: 'No thanks',
      feedbackThanks: 'Thank you for your feedback.',
      chatLabel: 'Chat with the assistant'
    },
    ja: {
      simulator: '応答はローカルのシミュレーターによるもので、実際のモデルではありません。',
      signIn: 'アシスタントを使うにはサインインしてください。',
      unavailable: '現在アシスタントを利用できません。しばらくしてからもう一度お試しください。',
      feedbackLabel: 'ありがとうございます。よろしければ詳しく教えてください（任意）:',
      feedbackSend: 'コメントを送信',
      feedbackSkip: '閉じる',
      feedbackThanks: 'フィードバックありがとうございます。',
      chatLabel: 'アシスタントとのチャット'
    }
  };

  var language = /^ja\b/i.test(navigator.language || '') ? 'ja' : 'en';
  var text = STRINGS[language];
  var locale = language === 'ja' ? 'ja-JP' : 'en-US';
  var byId = function (id) { return document.getElementById(id); };
  var nonceMeta = document.querySelector('meta[name="csp-nonce"]');
  var nonce = nonceMeta ? nonceMeta.getAttribute('content') : undefined;
  var pendingRating = null;
  var returnFocus = null;
  var thanksTimer = null;
  var store = null;

  document.documentElement.lang = language;
  byId('webchat').setAttribute('aria-label', text.chatLabel);

  function showStatus(message) {
    clearTimeout(thanksTimer);
    byId('status').classList.remove('status-info');
    byId('status').textContent = message;
  }

  function sendBox() {
    return document.querySelector('[data-id="webchat-sendbox-input"]');
  }

  function postJson(url) {
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: '{}'
    });
  }

  // Thumbs up/down are Web Chat's own buttons; this adds the optional text, sent as the same
  // feedback event with the text in the action's description.
  function askForFeedbackText(action) {
    pendingRating = action;
    byId('feedback-label').textContent = text.feedbackLabel;
    byId('feedback-send').textContent = text.feedbackSend;
    byId('feedback-skip').textContent = text.feedbackSkip;
    byId('feedback-text').value = '';
    // Where focus goes back to when the form closes (the thumb, usually); a second vote while the
    // form is open keeps the first one's.
    var active = document.activeElement;
    if (byId('feedback').hidden || !returnFocus) {
      returnFocus = active && active !== document.body && !byId('feedback').contains(active)
        ? active
        : null;
    }
    byId('feedback').hidden = false;
    byId('feedback-text').focus();
  }

  function closeFeedback() {
    byId('feedback').hidden = true;
    pendingRating = null;
    var target = returnFocus && document.contains(returnFocus) ? returnFocus : sendBox();
    returnFocus = null;
    if (target) target.focus();
  }

  byId('feedback-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var comment = byId('feedback-text').value.trim();
    if (pendingRating && comment && store) {
      var action = Object.assign({}, pendingRating, { description: comment });
      store.dispatch({
        type: 'DIRECT_LINE/POST_ACTIVITY',
        meta: { method: 'keyboard' },
        payload: { activity: { type: 'event', name: FEEDBACK_EVENT, entities: [action] } }
      });
      showStatusBriefly(text.feedbackThanks);
    }
    closeFeedback();
  });
  byId('feedback-skip').addEventListener('click', closeFeedback);
  byId('feedback').addEventListener('keydown', function (event) {
    if (event.key === 'Escape') closeFeedback();
  });

  // Said in the status live region (announced), styled as information, not as an error.
  function showStatusBriefly(message) {
    var status = byId('status');
    clearTimeout(thanksTimer);
    status.classList.add('status-info');
    status.textContent = message;
    thanksTimer = setTimeout(function () {
      status.textContent = '';
      status.classList.remove('status-info');
    }, 3000);
  }

  function watchFeedback() {
    return function () {
      return function (next) {
        return function (action) {
          var activity = action.payload && action.payload.activity;
          if (
            action.type === 'DIRECT_LINE/POST_ACTIVITY' && activity && activity.type === 'event' &&
            activity.name === FEEDBACK_EVENT && activity.entities && activity.entities[0] &&
            !activity.entities[0].description
          ) {
            askForFeedbackText(activity.entities[0]);
          }
          return next(action);
        };
      };
    };
  }

  async function start() {
    var config = await (await fetch('/webchat/config.json', { credentials: 'same-origin' })).json();
    document.title = config.assistantName;
    byId('title').textContent = config.assistantName;
    if (config.simulator) {
      byId('simulator-note').textContent = text.simulator;
      byId('simulator-note').hidden = false;
    }
    var response = await postJson('/api/directline/token');
    if (response.status === 401) {
      showStatus(text.signIn);
      return;
    }
    if (!response.ok) {
      showStatus(text.unavailable);
      return;
    }
    var grant = await response.json();
    store = window.WebChat.createStore({}, watchFeedback());
    window.WebChat.renderWebChat(
      {
        directLine: window.WebChat.createDirectLine({
          token: grant.token,
          domain: grant.domain,
          webSocket: true
        }),
        store: store,
        locale: locale,
        nonce: nonce,
        username: grant.userName,
        styleOptions: {
          hideUploadButton: true,
          // Model output is Markdown only: HTML in it is shown as text, never parsed.
          markdownRenderHTML: false,
          botAvatarInitials: 'AI',
          bubbleMaxWidth: 720
        }
      },
      byId('webchat')
    );
    var input = sendBox();
    if (input) input.focus();
    document.body.setAttribute('data-ready', 'true');
  }

  start().catch(function () {
    showStatus(text.unavailable);
  });
})();

// The sandbox page: play a citizen talking to the bot through the fake Telegram's control API.
// Polls the control API every second; renders with DOM calls (textContent), so bot text is never HTML.
"use strict";

const API = "/sandbox/telegram";
const state = { chatId: null, chats: [], chatsKey: "", messagesKey: "", pendingCallbacks: new Map() };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(data.detail ? JSON.stringify(data.detail) : `HTTP ${response.status}`);
  }
  return data;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function toast(text, ms = 2500) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, ms);
}

async function act(promise) {
  try {
    return await promise;
  } catch (error) {
    toast("出错了 (error): " + error.message, 4000);
    return null;
  } finally {
    refresh();
  }
}

function currentChat() {
  return state.chats.find((c) => c.chat_id === state.chatId) || null;
}

// --- chats list ---

function renderChats() {
  const list = $("chats");
  list.replaceChildren();
  if (!state.chats.length) {
    list.append(el("li", { className: "muted", textContent: "暂无对话 (no chats yet)" }));
    return;
  }
  for (const chat of state.chats) {
    const name = el("div", { textContent: `${chat.first_name} ` });
    if (chat.blocked) name.append(el("span", { className: "badge", textContent: "已屏蔽 (blocked)" }));
    const meta = el("div", {
      className: "meta",
      textContent: `#${chat.chat_id} · ${chat.phone || "无手机号 (no phone)"} · ${chat.messages} 条消息 (messages)`,
    });
    const item = el("li", { className: chat.chat_id === state.chatId ? "active" : "" }, [name, meta]);
    item.addEventListener("click", () => selectChat(chat.chat_id));
    list.append(item);
  }
}

function enableComposer(enabled) {
  for (const node of document.querySelectorAll("#composer input, #composer button, #block")) node.disabled = !enabled;
}

function selectChat(chatId) {
  state.chatId = chatId;
  state.messagesKey = "";
  enableComposer(chatId !== null);
  renderChats();
  refresh();
  $("text").focus();
}

// --- conversation ---

function inlineKeyboard(message) {
  const rows = (message.reply_markup && message.reply_markup.inline_keyboard) || [];
  const box = el("div", { className: "inline-kb" });
  for (const row of rows) {
    const line = el("div", { className: "row" });
    for (const button of row) {
      const b = el("button", { type: "button", textContent: button.text });
      if (button.url) {
        b.title = button.url;
        b.addEventListener("click", () => window.open(button.url, "_blank", "noopener"));
      } else if (button.callback_data !== undefined) {
        b.title = "callback_data: " + button.callback_data;
        b.addEventListener("click", () => press(message.message_id, button.callback_data));
      } else {
        b.disabled = true;
      }
      line.append(b);
    }
    box.append(line);
  }
  return rows.length ? box : null;
}

function renderMessage(message) {
  const bubble = el("div", { className: "msg " + message.from });
  if (message.contact) {
    const c = message.contact;
    bubble.append(el("div", {
      className: "contact",
      textContent: `📇 联系人名片 (contact): ${c.first_name} ${c.phone_number}` + (c.user_id ? ` · user ${c.user_id}` : ""),
    }));
  } else {
    bubble.append(document.createTextNode(message.text || ""));
  }
  const keyboard = inlineKeyboard(message);
  if (keyboard) bubble.append(keyboard);
  const time = new Date(message.sent_at * 1000).toLocaleTimeString();
  const info = `#${message.message_id} · ${time}` + (message.edited ? " · 已编辑 (edited)" : "");
  bubble.append(el("div", { className: "info", textContent: info }));
  return bubble;
}

function renderReplyKeyboard(keyboard) {
  const box = $("reply-keyboard");
  box.replaceChildren();
  box.hidden = !keyboard;
  if (!keyboard) return;
  box.append(el("div", { className: "muted", textContent: "机器人的快捷键盘 (the bot's reply keyboard)" }));
  for (const row of keyboard.keyboard || []) {
    const line = el("div", { className: "row" });
    for (const button of row) {
      const text = typeof button === "string" ? button : button.text;
      const b = el("button", { type: "button", textContent: text });
      if (button.request_contact) {
        b.className = "contact";
        // The button's text as the bot wrote it (Telegram adds no icon of its own): a hint on hover only.
        b.title = "分享我的联系方式 (shares this chat's phone number) / share my contact";
        b.addEventListener("click", shareOwnContact);
      } else {
        b.addEventListener("click", () => sendText(text));
      }
      line.append(b);
    }
    box.append(line);
  }
}

function renderConversation(data) {
  const chat = currentChat();
  $("chat-header").textContent = chat
    ? `${chat.first_name} · chat ${chat.chat_id} · ${chat.phone || "无手机号 (no phone)"}`
    : `chat ${data.chat_id}`;
  $("block").textContent = data.blocked ? "解除屏蔽 (Unblock bot)" : "屏蔽机器人 (Block bot)";
  $("typing").hidden = !data.typing;
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(...data.messages.map(renderMessage));
  if (!data.messages.length) box.append(el("div", { className: "muted", textContent: "还没有消息，试试发送 /start (no messages yet; try /start)" }));
  if (atBottom) box.scrollTop = box.scrollHeight;
  renderReplyKeyboard(data.reply_keyboard);
}

// --- citizen actions ---

function sendText(text) {
  if (!state.chatId || !text.trim()) return;
  act(api("POST", `/chats/${state.chatId}/send`, { text }));
}

function press(messageId, data) {
  act(api("POST", `/chats/${state.chatId}/press`, { message_id: messageId, data }).then((r) => {
    if (r) state.pendingCallbacks.set(r.callback_query_id, Date.now());
  }));
}

function shareOwnContact() {
  const chat = currentChat();
  if (!chat) return;
  let phone = chat.phone;
  if (!phone) {
    phone = prompt("你的手机号 (your phone number)", "+86");
    if (!phone) return;
  }
  act(api("POST", `/chats/${state.chatId}/contact`, { phone_number: phone }));
}

function shareOtherContact() {
  const phone = prompt("对方手机号 (their phone number)", "+86");
  if (!phone) return;
  const name = prompt("对方姓名 (their name)", "家人 (relative)") || undefined;
  const userId = prompt("对方的 Telegram user id（可留空）(their Telegram user id, optional)", "");
  const body = { phone_number: phone, first_name: name, user_id: userId ? Number(userId) : 0 };
  act(api("POST", `/chats/${state.chatId}/contact`, body));
}

async function checkCallbacks() {
  for (const [id, since] of state.pendingCallbacks) {
    if (Date.now() - since > 20000) {
      state.pendingCallbacks.delete(id);
      toast("机器人没有应答按钮 (the bot did not answer the button press)");
      continue;
    }
    const answer = await api("GET", `/callbacks/${id}`).catch(() => null);
    if (!answer || !answer.answered) continue;
    state.pendingCallbacks.delete(id);
    if (answer.text && answer.show_alert) alert(answer.text);
    else if (answer.text) toast(answer.text);
  }
}

// --- polling ---

async function refresh() {
  try {
    const data = await api("GET", "/chats");
    $("bot-info").textContent = `机器人 (bot): @${data.bot_username} (id ${data.bot_id})`;
    const key = JSON.stringify(data.chats);
    state.chats = data.chats;
    if (key !== state.chatsKey) {
      state.chatsKey = key;
      renderChats();
    }
    const stats = await api("GET", "/stats");
    $("stats").textContent =
      `已发送 (sent) ${stats.sent} · 429 限流 (rate-limited) ${stats.rejected_429} · 403 屏蔽 (blocked) ${stats.blocked_403}`;
    if (state.chatId !== null && !currentChat()) {
      selectChat(null);  // the sandbox was reset
      $("messages").replaceChildren();
      renderReplyKeyboard(null);
      $("chat-header").textContent = "请选择或新建一个对话 (pick or create a chat)";
    }
    if (state.chatId !== null) {
      const conversation = await api("GET", `/chats/${state.chatId}/messages`);
      const conversationKey = JSON.stringify(conversation);
      if (conversationKey !== state.messagesKey) {
        state.messagesKey = conversationKey;
        renderConversation(conversation);
      }
    }
    await checkCallbacks();
  } catch (error) {
    $("bot-info").textContent = "沙盒无响应 (sandbox not answering): " + error.message;
  }
}

$("new-chat").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {};
  for (const [name, value] of form) if (String(value).trim()) body[name] = String(value).trim();
  act(api("POST", "/chats", body).then((chat) => {
    if (chat) {
      event.target.reset();
      selectChat(chat.chat_id);
    }
  }));
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  sendText(input.value);
  input.value = "";
});

$("share-own").addEventListener("click", shareOwnContact);
$("share-other").addEventListener("click", shareOtherContact);
$("block").addEventListener("click", () => {
  const chat = currentChat();
  if (chat) act(api("POST", `/chats/${state.chatId}/block`, { blocked: !chat.blocked }));
});
$("reset").addEventListener("click", () => {
  if (!confirm("清空沙盒里的全部对话、通话和计数？(Clear every chat, call and counter in the sandbox?)")) return;
  act(Promise.all([api("POST", "/reset"), fetch("/sandbox/twilio/reset", { method: "POST" })]));
});

// A link can open one citizen's chat directly: /?chat=700000001
const linked = Number(new URLSearchParams(location.search).get("chat"));
if (linked) selectChat(linked); else refresh();
setInterval(refresh, 1000);

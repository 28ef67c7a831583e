// The phone panel: play the person being called through the fake Twilio's control API.
// Polls /sandbox/twilio every second (faster while a call is live); renders with DOM calls (textContent), so
// what the application says is never HTML. Uses el(), toast() and $() from sandbox.js.
"use strict";

const PHONE_API = "/sandbox/twilio";
const phone = { calls: [], selected: null, pinned: false, callsKey: "", panelKey: "", announced: new Set(), timer: null };
const LIVE = new Set(["queued", "ringing", "in-progress"]);
const STATUS_LABELS = {
  queued: "排队 (queued)", ringing: "响铃 (ringing)", "in-progress": "通话中 (in progress)",
  completed: "已结束 (completed)", busy: "忙线 (busy)", "no-answer": "无人接听 (no answer)",
  failed: "失败 (failed)", canceled: "已取消 (canceled)",
};

async function phoneApi(method, path, body) {
  const response = await fetch(PHONE_API + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail ? JSON.stringify(data.detail) : `HTTP ${response.status}`);
  return data;
}

async function phoneAct(promise) {
  try {
    return await promise;
  } catch (error) {
    toast("出错了 (error): " + error.message, 4000);
    return null;
  } finally {
    refreshCalls();
  }
}

function statusBadge(status) {
  return el("span", { className: "st " + status, textContent: STATUS_LABELS[status] || status });
}

function selectedCall() {
  return phone.calls.find((c) => c.sid === phone.selected) || null;
}

// --- the call log ---

function renderCallLog() {
  const list = $("calls");
  list.replaceChildren();
  if (!phone.calls.length) {
    list.append(el("li", { className: "muted", textContent: "暂无通话 (no calls yet)" }));
    return;
  }
  for (const call of [...phone.calls].reverse()) {
    const line = el("div", { textContent: `${call.parent_call_sid ? "↳ " : ""}${call.to} ` }, [statusBadge(call.status)]);
    const time = new Date(call.created_at * 1000).toLocaleTimeString();
    const meta = el("div", {
      className: "meta",
      textContent: `${time} · 来电号码 (from) ${call.from} · ${call.behaviour}` +
        (call.duration ? ` · ${call.duration} 秒 (s)` : ""),
    });
    const item = el("li", { className: (call.sid === phone.selected ? "active" : "") + (call.parent_call_sid ? " leg" : "") },
      [line, meta]);
    item.title = call.sid;
    item.addEventListener("click", () => { phone.selected = call.sid; phone.pinned = true; phone.panelKey = ""; renderAll(); });
    list.append(item);
  }
}

// --- the selected call ---

function transcriptLine(event, details) {
  const by = (who) => ({ api: "应用 (the application)", callee: "你 (you)", twiml: "应用 (TwiML)", caller: "主叫 (caller)",
    end_of_twiml: "流程结束 (end of TwiML)", error: "应用出错 (application error)", network: "网络 (network)" }[who] || who);
  switch (event.type) {
    case "say": return el("div", { className: "say", textContent: `🔊 ${event.text}` + (event.language ? `  [${event.language}]` : "") });
    case "play": return el("div", { className: "say", textContent: `🎵 播放 (play) ${event.url}` });
    case "gather": return el("div", { className: "note", textContent: `⌨ 收号 (gather): ${event.num_digits || "任意"} 位 (digits), ${event.timeout_s} 秒超时 (s timeout)` });
    case "press": return el("div", { className: "me", textContent: `${event.source === "script" ? "脚本按键 (script pressed)" : "你按了 (you pressed)"} ${event.digits}` });
    case "digits": return el("div", { className: "note", textContent: `→ 已提交按键 (keys sent): ${event.digits || "(无 none)"}` });
    case "gather_timeout": return el("div", { className: "note", textContent: "⏱ 未按键，继续 (no keys; moving on)" });
    case "pause": return details ? el("div", { className: "note", textContent: `… 停顿 (pause) ${event.length_s} 秒 (s)` }) : null;
    case "dial": return el("div", { className: "note", textContent: `📞 转接 (dialling) ${event.numbers.join(", ")}` });
    case "dial_ended": return el("div", { className: "note", textContent: `📞 转接结束 (dial ended): ${event.dial_call_status}` });
    case "bridged": return el("div", { className: "note", textContent: "🔗 已接通 (bridged)" });
    case "answered": return el("div", { className: "note", textContent: "✅ 已接听 (answered)" + (event.answered_by ? ` · ${event.answered_by}` : "") });
    case "hangup": return el("div", { className: "note", textContent: `⛔ 挂断 (hung up): ${by(event.by)}` });
    case "reject": return el("div", { className: "note", textContent: `⛔ 拒接 (rejected): ${event.reason}` });
    case "error": return el("div", { className: "error", textContent: `⚠ ${event.code || ""} ${event.message}` });
    case "unsupported": return el("div", { className: "error", textContent: `⚠ 沙盒不支持 (not simulated): <${event.verb}>` });
    case "status":
      if (["ringing", "completed", "busy", "no-answer", "failed", "canceled"].includes(event.status)) {
        return el("div", { className: "note", textContent: `状态 (status): ${STATUS_LABELS[event.status] || event.status}` });
      }
      return details ? el("div", { className: "detail", textContent: `status ${event.status}` }) : null;
    case "twiml_fetch":
    case "status_callback":
      if (!details) return null;
      return el("div", {
        className: "detail",
        textContent: `${event.type === "twiml_fetch" ? "⇄ TwiML" : "⇢ callback " + event.call_status} ` +
          `${event.method} ${event.url} → ${event.http_status ?? event.error ?? "…"}`,
      });
    default: return details ? el("div", { className: "detail", textContent: `${event.type}` }) : null;
  }
}

function renderPanel() {
  const call = selectedCall();
  const details = $("call-details").checked;
  const legs = call ? phone.calls.filter((c) => c.parent_call_sid === call.sid).map((c) => [c.sid, c.status]) : [];
  const key = JSON.stringify([call, details, legs]);
  if (key === phone.panelKey) return;
  phone.panelKey = key;
  const header = $("call-header");
  header.replaceChildren();
  $("call-panel").classList.toggle("ringing", Boolean(call && call.status === "ringing"));
  if (!call) {
    header.textContent = "暂无通话 (no calls yet)";
    header.className = "muted";
    $("transcript").replaceChildren();
  } else {
    header.className = "";
    const who = call.direction === "outbound-dial" ? "转接来电 (transferred call)" : "来电 (incoming call)";
    header.append(`📱 ${call.to} · ${who} ${call.from} `, statusBadge(call.status));
    if (call.answered_by) header.append(el("span", { className: "muted", textContent: ` · ${call.answered_by}` }));
    const box = $("transcript");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
    box.replaceChildren(...call.events.map((e) => transcriptLine(e, details)).filter(Boolean));
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
  renderLegs(call);
  const ringing = Boolean(call && (call.status === "ringing" || call.status === "queued"));
  const live = Boolean(call && call.status === "in-progress");
  $("call-answer").disabled = !ringing;
  $("call-reject").disabled = !ringing;
  $("call-hangup").disabled = !(ringing || live);
  $("gathering").hidden = !(call && call.gathering);
  for (const button of $("keypad").children) button.disabled = !live;
}

// Key 2 on a call: the seats' phones a <Dial> rings for it, each answerable here as that seat would.
function renderLegs(call) {
  const legs = call ? phone.calls.filter((c) => c.parent_call_sid === call.sid) : [];
  $("legs").hidden = !legs.length;
  const list = $("leg-list");
  list.replaceChildren();
  for (const leg of legs) {
    const item = el("li", {}, [el("span", { textContent: `☎ 坐席 (seat) ${leg.to} ` }), statusBadge(leg.status)]);
    if (leg.status === "ringing" || leg.status === "queued") {
      const answer = el("button", { type: "button", textContent: "坐席接听 (answer as this seat)" });
      answer.addEventListener("click", () => phoneAct(phoneApi("POST", `/calls/${leg.sid}/answer`)));
      const reject = el("button", { type: "button", className: "danger", textContent: "拒接 (reject)" });
      reject.addEventListener("click", () => phoneAct(phoneApi("POST", `/calls/${leg.sid}/reject`)));
      item.append(" ", answer, " ", reject);
    } else if (leg.status === "in-progress") {
      const hangup = el("button", { type: "button", className: "danger", textContent: "坐席挂断 (seat hangs up)" });
      hangup.addEventListener("click", () => phoneAct(phoneApi("POST", `/calls/${leg.sid}/hangup`)));
      item.append(" ", el("span", { className: "muted", textContent: "🔗 已与市民接通 (talking with the citizen) " }), hangup);
    }
    list.append(item);
  }
}

function renderAll() {
  renderCallLog();
  renderPanel();
}

// --- polling ---

function followLiveCalls() {
  // A new call to a 'manual' number rings here: select it and say so (once).
  for (const call of phone.calls) {
    if (call.status === "ringing" && !phone.announced.has(call.sid)) {
      phone.announced.add(call.sid);
      // A seat's phone rung by a <Dial> (key 2) is answered from its citizen's panel; it does not take the focus.
      if (call.behaviour === "manual" && !call.parent_call_sid) {
        toast(`📞 来电 (incoming call): ${call.to} ← ${call.from}`, 4000);
        phone.selected = call.sid;
        phone.pinned = false;
      }
    }
  }
  const current = selectedCall();
  if (!phone.pinned && (!current || !LIVE.has(current.status))) {
    const live = [...phone.calls].reverse().find((c) => LIVE.has(c.status));
    const newest = phone.calls[phone.calls.length - 1];
    if (live || (!current && newest)) phone.selected = (live || newest).sid;
  }
}

async function refreshCalls() {
  clearTimeout(phone.timer);
  let anyLive = false;
  try {
    const [data, stats] = await Promise.all([phoneApi("GET", "/calls?limit=40"), phoneApi("GET", "/stats")]);
    phone.calls = data.calls;
    anyLive = phone.calls.some((c) => LIVE.has(c.status));
    $("call-stats").textContent =
      `· 已呼叫 (created) ${stats.created} · 429 限流 (rate-limited) ${stats.rejected_429} · 通话中 (live) ${stats.live}`;
    if (phone.selected && !selectedCall()) { phone.selected = null; phone.pinned = false; }  // reset
    followLiveCalls();
    const key = JSON.stringify(phone.calls.map((c) => [c.sid, c.status, c.duration]).concat([phone.selected]));
    if (key !== phone.callsKey) {
      phone.callsKey = key;
      renderCallLog();
    }
    renderPanel();
  } catch (error) {
    $("call-stats").textContent = "· 电话沙盒无响应 (phone sandbox not answering)";
  }
  phone.timer = setTimeout(refreshCalls, anyLive ? 400 : 1000);
}

// --- the callee's actions ---

function callAction(action, body) {
  const call = selectedCall();
  if (call) phoneAct(phoneApi("POST", `/calls/${call.sid}/${action}`, body));
}

for (const key of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"]) {
  const button = el("button", { type: "button", textContent: key, disabled: true });
  button.addEventListener("click", () => callAction("press", { digits: key }));
  $("keypad").append(button);
}
$("call-answer").addEventListener("click", () => callAction("answer"));
$("call-reject").addEventListener("click", () => callAction("reject"));
$("call-hangup").addEventListener("click", () => callAction("hangup"));
$("call-details").addEventListener("change", () => { phone.panelKey = ""; renderPanel(); });
document.addEventListener("keydown", (event) => {
  // Typing a digit while a call is live presses it (unless focus is in a text field).
  const call = selectedCall();
  if (!call || call.status !== "in-progress" || /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) return;
  if (/^[0-9*#]$/.test(event.key)) callAction("press", { digits: event.key });
});

$("ring-here").addEventListener("change", (event) => {
  const behaviour = event.target.checked ? "manual" : "answer";
  phoneAct(phoneApi("POST", "/settings", { default_behaviour: behaviour }).then(() =>
    toast(event.target.checked ? "未设置的号码将在本页响铃 (unscripted numbers now ring here)"
      : "未设置的号码将自动接听 (unscripted numbers now answer by themselves)")));
});

// A desk-phone seat: its phone dials the seat line (set up first with the callcenter's voice URL); the call is
// selected, so its prompts show here and the keypad (or the keyboard's digits) answers them.
$("dial-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const to = String(form.get("to")).trim();
  const line = await phoneAct(phoneApi("PUT", `/incoming/${encodeURIComponent(to)}`, { url: String(form.get("url")).trim() }));
  if (!line) return;
  const call = await phoneAct(phoneApi("POST", "/dial-in", { from: String(form.get("from")).trim(), to }));
  if (call) { phone.selected = call.sid; phone.pinned = true; phone.panelKey = ""; }
});
$("number-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const number = String(form.get("number")).trim();
  const raw = String(form.get("digits") || "");
  const digits = raw.trim() === "" ? [] : raw.split(",").map((d) => d.trim());
  const body = { behaviour: form.get("behaviour"), digits };
  phoneAct(phoneApi("PUT", `/numbers/${encodeURIComponent(number)}`, body).then((saved) =>
    toast(`已保存 (saved): ${saved.number} → ${saved.behaviour}` + (saved.digits.length ? ` [${saved.digits.join(",")}]` : ""))));
});

phoneApi("GET", "/settings").then((settings) => {
  $("ring-here").checked = settings.default_behaviour === "manual";
}).catch(() => {});
refreshCalls();

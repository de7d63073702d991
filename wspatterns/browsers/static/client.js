// A browser client of the kit, drawn in a notebook output (an anywidget ES module).
//
// The page, not the kernel, opens the WebSocket: that is the point. One
// connection per widget model and page, made in initialize(); every view
// rendered of that model draws the same connection. The kernel drives it with
// custom messages ({do: ...}) and hears what happened ({event: ...}).
// LOOPBACK and jupyterBaseUrl() come from where.js, put in front of this module by view.py.
//
// Each event told to the kernel carries a number (seq, from 1 per page) and is kept until
// the kernel acknowledges it ({do: "ack", seq}: every number up to seq taken), then told
// again, patiently: ipykernel handles a widget's message beside a running cell, but one
// that arrives just as a cell ends waits behind every cell Run All queued, and the next
// cell may be waiting for it. The kernel takes each number once, in order.

const REGISTRY = "__wspatterns_browser_clients__";
const SHOWN = 120; // characters of a message shown in the log
const KEPT = 500; // log lines kept per client
const RESEND_AFTER = 500; // ms without an acknowledgement before an event is told again
const RESEND_AT_MOST = 4000; // ms: the wait doubles with each time told, up to this
const RESENT_AT_ONCE = 20; // events told again per round, the oldest first
const CLOSE_NAMES = {
  1000: "normal closure", 1001: "going away", 1002: "protocol error",
  1003: "unsupported data", 1005: "no status received", 1006: "connection lost",
  1007: "invalid data", 1008: "policy violation", 1009: "message too big",
  1010: "mandatory extension", 1011: "internal error", 1012: "service restart",
  1013: "try again later", 1014: "bad gateway", 1015: "TLS handshake failed",
};

function registry() {
  if (!globalThis[REGISTRY]) globalThis[REGISTRY] = new Map();
  return globalThis[REGISTRY];
}

// The route from this page to the kit's server, and why it was taken.
export function chooseRoute(target, forced, page = location) {
  const base = jupyterBaseUrl();
  const servedBy = `this page comes from ${page.host || page.protocol}`;
  let route = forced;
  let why;
  if (forced === "direct" || forced === "proxy") {
    why = target.asked_by || `route="${forced}" asked for it`;
  } else if (base === null) {
    route = "direct";
    why = `${servedBy}, not from a Jupyter server: straight to the server`;
  } else if (LOOPBACK.test(page.hostname)) {
    route = "direct";
    why = `${servedBy}, the kernel's own machine: straight to the server`;
  } else {
    route = "proxy";
    why = `${servedBy}, not the kernel's machine: through jupyter-server-proxy`;
  }
  if (route === "proxy" && base === null) {
    return { route, url: null, why: "route=\"proxy\" needs a page served by a Jupyter server" };
  }
  if (route === "direct") return { route, url: target.direct, why };
  const scheme = page.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${page.host}${base}proxy/${target.port}${target.path}`;
  return { route, url, why };
}

function describe(data) {
  if (typeof data === "string") {
    const bytes = new TextEncoder().encode(data).length;
    const text = data.length > SHOWN ? data.slice(0, SHOWN) + "…" : data;
    return { text: text === "" ? "(empty)" : text, size: bytes, binary: false };
  }
  const bytes = new Uint8Array(data);
  const hex = Array.from(bytes.slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return { text: hex + (bytes.length > 16 ? " …" : ""), size: bytes.length, binary: true };
}

function sizeText(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

function closeText(code, reason) {
  const name = CLOSE_NAMES[code] || (code >= 4000 ? "application code" : "");
  const said = reason ? ` "${reason}"` : "";
  return `${code}${name ? " " + name : ""}${said}`;
}

class Connection {
  constructor(model) {
    this.model = model;
    this.page = Math.random().toString(36).slice(2, 10);
    this.log = [];
    this.views = new Set();
    this.socket = null;
    this.heard = false; // any message received yet
    this.state = "waiting";
    this.route = "";
    this.url = "";
    this.why = "waiting for the kernel";
    this.told = 0; // the number of the last event told to the kernel
    this.unacked = new Map(); // seq -> {content, buffers, at, wait}: told, not acknowledged
    this.resending = null; // the timer of the next round of telling again
    this.gone = false; // destroyed: the kernel dropped this client, or a newer one replaced it
    this.onMessage = (content, buffers) => this.obey(content, buffers || []);
    model.on("msg:custom", this.onMessage);
    this.tell({ event: "hello", origin: location.origin });
  }

  tell(content, buffers) {
    const told = { ...content, page: this.page, seq: ++this.told };
    const kept = { content: told, buffers: buffers || [], at: Date.now(), wait: RESEND_AFTER };
    this.model.send(told, undefined, kept.buffers);
    if (this.gone) return; // the kernel dropped this client: nothing to wait for
    this.unacked.set(told.seq, kept);
    this.resendSoon();
  }

  // The kernel took every event up to seq: forget them.
  acked(seq) {
    for (const number of this.unacked.keys()) {
      if (number > seq) break;
      this.unacked.delete(number);
    }
  }

  resendSoon() {
    if (this.resending === null) {
      this.resending = setTimeout(() => this.resend(), RESEND_AFTER / 2);
    }
  }

  // Tell again the oldest events the kernel has not acknowledged in time, waiting
  // longer after each (a kernel busy in a long cell is not flooded).
  resend() {
    this.resending = null;
    if (this.unacked.size === 0) return;
    const now = Date.now();
    let resent = 0;
    for (const kept of this.unacked.values()) {
      if (resent === RESENT_AT_ONCE) break;
      if (now - kept.at < kept.wait) continue;
      this.model.send(kept.content, undefined, kept.buffers);
      kept.at = now;
      kept.wait = Math.min(kept.wait * 2, RESEND_AT_MOST);
      resent += 1;
    }
    this.resendSoon();
  }

  obey(content, buffers) {
    if (content.page && content.page !== this.page) return;
    if (content.do === "ack") this.acked(content.seq);
    else if (content.do === "connect") this.connect(content);
    else if (content.do === "stand-by") this.standBy(content.why, content.ended);
    else if (content.do === "ended") this.ended(content);
    else if (content.do === "send") {
      const data = content.binary ? buffers[0].buffer.slice(
        buffers[0].byteOffset, buffers[0].byteOffset + buffers[0].byteLength) : content.text;
      this.send(data, content.id);
    } else if (content.do === "close") this.close(content.code, content.reason);
  }

  // Another page holds this client's connection, or held it and it has ended.
  standBy(why, ended) {
    this.state = ended ? "closed" : "elsewhere";
    this.why = why;
    this.draw();
  }

  // The kernel saw the connection end without this page saying so: the page that had it is gone.
  ended(content) {
    if (this.socket) return; // this page's own socket reports its own close
    this.state = "closed";
    this.why = content.why;
    this.draw();
  }

  connect(target) {
    const { route, url, why } = chooseRoute(target, target.route);
    this.port = target.port;
    this.route = route;
    this.url = url || "";
    this.why = why;
    if (url === null) return this.failed(why);
    this.state = "connecting";
    this.tell({ event: "connecting", route, url, why });
    this.draw();
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      return this.failed(`the browser refused ${url}: ${error.message}`);
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      this.state = "open";
      this.tell({ event: "open" });
      this.draw();
    };
    socket.onmessage = (message) => {
      this.heard = true;
      const shown = describe(message.data);
      this.add("in", shown);
      if (typeof message.data === "string") this.tell({ event: "message", text: message.data });
      else this.tell({ event: "message", binary: true }, [message.data]);
    };
    socket.onclose = (event) => this.closed(event);
  }

  send(data, id) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      this.tell({ event: "refused", id, why: `the connection is ${this.state}` });
      return;
    }
    socket.send(data);
    this.add("out", describe(data));
    if (id !== null) this.tell({ event: "sent", id }); // the kernel knows what it asked for
    else this.tell({ event: "sent", id, text: data }); // typed in the page
  }

  close(code, reason) {
    const socket = this.socket;
    if (!socket || socket.readyState >= WebSocket.CLOSING) return;
    this.state = "closing";
    try {
      socket.close(code, reason);
    } catch (error) {
      this.tell({ event: "refused", why: error.message });
    }
    this.draw();
  }

  async closed(event) {
    const opened = this.state !== "connecting";
    this.state = "closed";
    this.socket = null;
    // jupyter-server-proxy accepts the page's WebSocket before it reaches the server, and
    // drops it (1006) if it cannot: a socket that opened, heard nothing and was lost may
    // never have reached the server at all.
    const lost = event.code === 1006 && this.route === "proxy" && !this.heard;
    if (!opened || lost) {
      return this.failed(await this.diagnose(event.code));
    }
    const note = this.route === "proxy" && event.code === 1005
      ? " (jupyter-server-proxy passes no close code on)"
      : "";
    this.tell({ event: "close", code: event.code, reason: event.reason, clean: event.wasClean });
    this.add("end", { text: `closed: ${closeText(event.code, event.reason)}${note}`, size: null });
  }

  failed(why) {
    this.state = "failed";
    this.why = why;
    this.tell({ event: "failed", route: this.route, url: this.url, why });
    this.draw();
  }

  // A browser says only "1006" when a WebSocket cannot open; find out why, in words.
  async diagnose(code) {
    if (this.route === "direct") {
      const here = location.host || location.protocol;
      return `could not open ${this.url} from this page (${here}), code ${code}. Is the server `
        + "still running? If this browser is not on the kernel's machine, that address is "
        + "not the kernel's: use route=\"proxy\" (jupyter-server-proxy).";
    }
    const http = this.url.replace(/^ws/, "http");
    try {
      const answer = await fetch(http, { credentials: "same-origin", cache: "no-store" });
      if (answer.status === 404) {
        return `${http} answered 404: is jupyter-server-proxy installed where the Jupyter `
          + "server runs (pip install jupyter-server-proxy, then restart the server)?";
      }
      if (answer.status === 403 || answer.status === 401) {
        return `the Jupyter server refused ${http} (${answer.status}): log in again?`;
      }
      if (answer.status >= 500) {
        return `jupyter-server-proxy could not reach port ${this.port} (HTTP ${answer.status}): `
          + "is the server still running?";
      }
      return `${http} answers HTTP ${answer.status}, but the WebSocket failed (code ${code}).`;
    } catch (error) {
      return `could not reach ${http}: ${error.message}`;
    }
  }

  add(direction, shown) {
    this.log.push({ direction, ...shown, at: new Date() });
    if (this.log.length > KEPT) this.log.splice(0, this.log.length - KEPT);
    this.draw();
  }

  draw() {
    for (const view of this.views) view();
  }

  destroy() {
    this.model.off("msg:custom", this.onMessage);
    this.gone = true;
    clearTimeout(this.resending);
    this.resending = null;
    this.unacked.clear();
    if (this.socket && this.socket.readyState < WebSocket.CLOSING) {
      this.socket.close(1000, "the kernel dropped this client");
    }
    this.socket = null;
    this.views.clear();
  }
}

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

const STATE_WORDS = {
  waiting: "waiting for the kernel", connecting: "connecting", open: "open",
  closing: "closing", closed: "closed", failed: "failed", elsewhere: "in another page",
};

function render({ model, el }) {
  const connection = registry().get(model.get("key"));
  const root = element("div", "wsp-browser");
  const head = element("div", "wsp-head");
  const name = element("span", "wsp-name", model.get("name"));
  const state = element("span", "wsp-state");
  const route = element("span", "wsp-route");
  head.append(name, state, route);
  const url = element("div", "wsp-url");
  const why = element("div", "wsp-why");
  const log = element("div", "wsp-log");
  const form = element("form", "wsp-form");
  const input = element("input", "wsp-input");
  input.placeholder = "a message to send";
  input.setAttribute("aria-label", `message for ${model.get("name")} to send`);
  const send = element("button", "wsp-send", "Send");
  send.type = "submit";
  const close = element("button", "wsp-close", "Close");
  close.type = "button";
  form.append(input, send, close);
  root.append(head, url, why, log, form);
  el.append(root);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!connection || !input.value) return;
    connection.send(input.value, null);
    input.value = "";
  });
  close.addEventListener("click", () => connection && connection.close(1000, "closed from the page"));

  let drawn = 0;
  function draw() {
    if (!connection) {
      state.textContent = "no connection in this page";
      return;
    }
    state.textContent = STATE_WORDS[connection.state] || connection.state;
    state.dataset.state = connection.state;
    root.dataset.state = connection.state;
    route.textContent = connection.route === "proxy" ? "via jupyter-server-proxy"
      : connection.route === "direct" ? "direct" : "";
    route.hidden = !connection.route;
    url.textContent = connection.url;
    why.textContent = connection.why;
    why.dataset.failed = connection.state === "failed" ? "yes" : "no";
    const open = connection.state === "open";
    input.disabled = send.disabled = close.disabled = !open;
    if (drawn > connection.log.length) {
      log.replaceChildren();
      drawn = 0;
    }
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 4;
    for (const line of connection.log.slice(drawn)) {
      const row = element("div", `wsp-line wsp-${line.direction}`);
      const arrow = { out: "↑ sent", in: "↓ received", end: "■" }[line.direction];
      row.append(element("span", "wsp-arrow", arrow));
      const text = element("span", "wsp-text", line.text);
      if (line.binary) text.classList.add("wsp-binary");
      row.append(text);
      const size = line.size === null ? "" : (line.binary ? "binary " : "") + sizeText(line.size);
      row.append(element("span", "wsp-size", size));
      log.append(row);
    }
    drawn = connection.log.length;
    log.hidden = drawn === 0;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
  if (connection) connection.views.add(draw);
  draw();
  return () => connection && connection.views.delete(draw);
}

function initialize({ model }) {
  const key = model.get("key");
  const clients = registry();
  if (clients.has(key)) clients.get(key).destroy();
  const connection = new Connection(model);
  clients.set(key, connection);
  return () => {
    connection.destroy();
    if (clients.get(key) === connection) clients.delete(key);
  };
}

export default { initialize, render };

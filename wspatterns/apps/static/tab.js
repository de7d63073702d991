// A browser tab in a notebook output: an iframe showing the page a program serves.
//
// The page in the frame is the program's own, with its own script and WebSocket: the
// notebook only frames it. Like a browser client of the kit, the frame takes the
// program's address when this page comes from the kernel's machine, and goes through
// jupyter-server-proxy (<base_url>proxy/<port>/) when it does not, or when told to.

// LOOPBACK and jupyterBaseUrl() come from browsers/static/where.js, put in front by tab.py.

export function address(port, path, route, page = location) {
  const base = jupyterBaseUrl();
  const far = !LOOPBACK.test(page.hostname);
  const proxy = base !== null && (route === "proxy" || (route !== "direct" && far));
  if (proxy) return `${page.protocol}//${page.host}${base}proxy/${port}${path}`;
  return `http://127.0.0.1:${port}${path}`;
}

function render({ model, el }) {
  const frame = document.createElement("iframe");
  frame.className = "wsp-tab";
  frame.title = model.get("title");
  frame.style.cssText = "width: 100%; height: 14em; border: 1px solid #d0d7de; border-radius: 4px;";
  function draw() {
    const open = model.get("showing");
    frame.src = open ? address(model.get("port"), model.get("path"), model.get("route")) : "about:blank";
    frame.hidden = !open;
  }
  model.on("change:showing", draw);
  draw();
  el.append(frame);
  return () => model.off("change:showing", draw);
}

export default { render };

// Where is this page? Shared by the kit's widgets (browsers/view.py and apps/tab.py put
// this file in front of their own module): is it served from the kernel's machine,
// and where does its Jupyter server live, for jupyter-server-proxy's <base_url>proxy/<port>/.

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\]|::1)$/i;

// Where this page's Jupyter server lives: JupyterLab and Notebook 7 say it in the page.
function jupyterBaseUrl() {
  const element = document.getElementById("jupyter-config-data");
  if (element) {
    try {
      const base = JSON.parse(element.textContent).baseUrl;
      if (typeof base === "string") return base.endsWith("/") ? base : base + "/";
    } catch (error) {
      // not JSON: fall through to the address
    }
  }
  const match = location.pathname.match(/^(.*?\/)(lab|notebooks|tree|doc|edit|voila)(\/|$)/);
  return match ? match[1] : null;
}

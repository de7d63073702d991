# A JupyterHub for a class on one machine, every student's server started from the
# kit's environment. tests/test_hub.py starts exactly this file, so what it sets is tested.
#
#   jupyterhub -f deploy/jupyterhub_config.py      (from the environment the kit is in)
#
# Read deploy/README.md first: this file is the recipe's working part. Settings a
# teacher changes come from the environment, each with a default that suits one machine:
#
#   WSPATTERNS_HUB_IP         the address students open (default: this machine's first
#                             non-loopback address; a hub is a page served from elsewhere)
#   WSPATTERNS_HUB_PORT       its port (default 8000)
#   WSPATTERNS_HUB_HOMES      where each student's folder is made, one per name (default
#                             /srv/wspatterns/homes); a new student finds the lessons in it
#   WSPATTERNS_HUB_LESSONS    the lessons each new student is given (default: the
#                             notebooks/ folder of this checkout)
#   WSPATTERNS_HUB_PROXY      configurable-http-proxy's command (default: the one
#                             `make hub` installs in deploy/node_modules)
#   WSPATTERNS_HUB_STATE      where the hub keeps its database, cookie secret and proxy
#                             pid (default: the folder it is started in)
#
# This hub lets anyone in with any password (DummyAuthenticator) and runs every student
# as the hub's own user (SimpleLocalProcessSpawner): right for a test and a try-out on a
# machine nobody else can reach, wrong for a real class. deploy/README.md says what to
# change for The Littlest JupyterHub and for Zero to JupyterHub.

import os
import shutil
import socket
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

HERE = Path(__file__).resolve().parent
KIT_BIN = Path(sys.executable).parent  # the hub runs from the kit's environment


def first_outside_address() -> str:
    """This machine's address on its first network: where a student's browser comes from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ip = os.environ.get("WSPATTERNS_HUB_IP") or first_outside_address()
port = int(os.environ.get("WSPATTERNS_HUB_PORT", "8000"))
homes = Path(os.environ.get("WSPATTERNS_HUB_HOMES", "/srv/wspatterns/homes"))
lessons = Path(os.environ.get("WSPATTERNS_HUB_LESSONS", HERE.parent / "notebooks"))
state = Path(os.environ.get("WSPATTERNS_HUB_STATE", "."))

c.JupyterHub.bind_url = f"http://{ip}:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"  # the hub's own API: only the proxy and the servers use it
c.JupyterHub.hub_port = free_port()  # two hubs on one machine do not collide
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True

c.ConfigurableHTTPProxy.command = [
    os.environ.get("WSPATTERNS_HUB_PROXY")
    or str(HERE / "node_modules" / ".bin" / "configurable-http-proxy")
]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(homes / "{username}")
c.Spawner.cmd = [str(KIT_BIN / "jupyterhub-singleuser")]
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.default_url = "/lab/tree/index.ipynb"  # the list of lessons, as `make lab` opens
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# The kit's environment first on PATH: its kernel, its redis-server, its jupyter.
c.Spawner.environment = {"PATH": f"{KIT_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def give_lessons(spawner) -> None:
    """A new student's folder starts with the lessons; a returning student's work is kept."""
    home = Path(spawner.home_dir)
    if not home.exists():
        shutil.copytree(lessons, home, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))


c.Spawner.pre_spawn_hook = give_lessons

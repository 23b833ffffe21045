"""Stand-in for get-pip.py, installed by `make deps` as ~/.ansible/test/cache/get_pip_24_2.py.

ansible-test bootstraps pip into each virtual environment it makes (``--venv``) by running
get-pip.py from ci-files.testing.ansible.com, which this network cannot reach. It runs the
cached copy as ``GET_PIP=<cache file> python quiet_pip.py --disable-pip-version-check
pip==24.2 --no-setuptools --no-wheel`` (see ansible_test/_util/target/setup/requirements.py,
``bootstrap()``). This stand-in does the same job from what Python ships: ``ensurepip``
puts the bundled pip into the environment, then pip installs the requested packages
(pip==24.2) from the package index.
"""
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel", "--no-pip")


def main(argv):
    """Bootstrap pip with ensurepip, then ``pip install`` the remaining arguments."""
    args = [a for a in argv if a not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                          stdout=subprocess.DEVNULL)
    packages = [a for a in args if not a.startswith("-")]
    if packages:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

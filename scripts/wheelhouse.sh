#!/usr/bin/env bash
# Downloads, on this host, the wheels the image needs: ringlb's dependencies (with the
# `docker` extra) and its build backend, for the Python and the C library of the image
# BASE (first argument). Prints the wheelhouse folder (inside the build context) on stdout.
#
# The folder is named after the target (e.g. cp311-x86_64-glibc2.36) and reused while
# pyproject.toml is unchanged, so only the first build downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${1:?usage: scripts/wheelhouse.sh BASE_IMAGE}
PIP=${PIP:-.venv/bin/pip}
[[ -x $PIP ]] || PIP="python3 -m pip"

say() { echo "wheelhouse: $*" >&2; }

# What the image's Python is: wheels are chosen for it, not for the host's Python.
read -r pyver glibc arch < <(docker run --rm --network none --entrypoint python3 "$BASE" -c \
    'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}",
     platform.libc_ver()[1] or "2.17", platform.machine())')
tag="cp${pyver/./}-$arch-glibc$glibc"
dest=.cache/wheelhouse/$tag
requirements=$dest/requirements.txt

# The project's dependencies and extras, read from pyproject.toml (one source of truth).
wanted=$(python3 - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
build = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]
deps = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["docker"]
print("\n".join(deps + build))
PY
)

if [[ -f $requirements && $(cat "$requirements") == "$wanted" ]]; then
    say "up to date: $dest"
    echo "$dest"
    exit 0
fi

say "downloading wheels for Python $pyver, glibc $glibc, $arch into $dest"
rm -rf "$dest"
mkdir -p "$dest"
# pip matches --platform exactly, so list every manylinux level the image's glibc runs.
platforms=(--platform "manylinux2014_$arch" --platform "linux_$arch")
minor=${glibc#2.}
for ((m = minor; m >= 17; m--)); do platforms+=(--platform "manylinux_2_${m}_$arch"); done
# shellcheck disable=SC2086
$PIP download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$pyver" --implementation cp "${platforms[@]}" \
    --dest "$dest" -r <(echo "$wanted") 2>&1 | { grep -v "is ignored: it is neither" >&2 || true; }
echo "$wanted" >"$requirements"
echo "$dest"

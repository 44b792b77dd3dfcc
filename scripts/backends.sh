#!/usr/bin/env bash
# Installs the real servers the integration tests start as child processes (see tests/backends.py):
#   - Prometheus + promtool, Pushgateway, Alertmanager + amtool, InfluxDB 1.6 from the system's apt;
#   - VictoriaMetrics (victoria-metrics, vmagent) and docker-compose from Debian trixie .debs,
#     fetched with a private apt configuration and unpacked into .backends/ (the system's apt setup
#     is left untouched), exposed as .backends/bin/<name>;
#   - PyPI oteltap (OTLP logs/traces receiver) into the project's .venv.
#   - npm @grafana/schema + typescript into scripts/dashboards-typecheck (the dashboards' tsc check).
# Idempotent: components already present are skipped. Packaged services are not started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
backends="$root/.backends"
bindir="$backends/bin"
mkdir -p "$bindir"

die() {
  echo "backends.sh: error: $*" >&2
  exit 1
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  fi
fi

# --- 1. system packages -------------------------------------------------------------------------
# Debian names the daemons prometheus-pushgateway and prometheus-alertmanager; accept either name.
have() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1 || [ -x "/usr/bin/$name" ]; then
      return 0
    fi
  done
  return 1
}

all_system_binaries() {
  have prometheus && have promtool && have pushgateway prometheus-pushgateway &&
    have alertmanager prometheus-alertmanager && have amtool && have influxd && have openssl
}

policy_created=""
cleanup() {
  if [ -n "$policy_created" ]; then
    $sudo rm -f /usr/sbin/policy-rc.d
  fi
}
trap cleanup EXIT

if all_system_binaries; then
  echo "apt packages (prometheus, pushgateway, alertmanager, influxdb, openssl): already present"
else
  if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then
    die "installing apt packages needs root (or sudo), which is not available"
  fi
  # Keep the packages' postinst scripts from starting services: invoke-rc.d honours exit 101.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, created by mlobs scripts/backends.sh\nexit 101\n' |
      $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  # openssl: the TLS tests make their own self-signed certificates with it
  packages=(prometheus prometheus-pushgateway prometheus-alertmanager influxdb openssl)
  apt_install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "${packages[@]}" >"$backends/apt-install.log" 2>&1
  }
  lists_empty=1
  if compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    lists_empty=""
  fi
  if [ -n "$lists_empty" ] || ! apt_install; then
    $sudo apt-get update -q >"$backends/apt-update.log" 2>&1 ||
      die "apt-get update failed; see $backends/apt-update.log"
    apt_install || die "apt-get install ${packages[*]} failed; see $backends/apt-install.log"
  fi
  cleanup
  policy_created=""
  all_system_binaries || die "apt packages installed but some binaries are still missing"
  echo "apt packages (prometheus, pushgateway, alertmanager, influxdb, openssl): installed"
fi

# --- 2. Debian trixie .debs, unpacked project-locally ---------------------------------------------
private="$backends/apt"

write_private_sources() {
  # The first stanza of the system's deb822 source file, with its Suites changed to trixie.
  local src
  src="$(find /etc/apt/sources.list.d -maxdepth 1 -name '*.sources' -type f 2>/dev/null |
    sort | head -n 1)"
  [ -n "$src" ] || die "no /etc/apt/sources.list.d/*.sources file to read the Debian mirror from"
  mkdir -p "$private/parts" "$private/lists/partial" "$private/cache/archives/partial"
  awk '
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*$/ { if (seen) exit; next }
    { seen = 1 }
    /^Suites:/ { print "Suites: trixie"; next }
    { print }
  ' "$src" >"$private/parts/trixie.sources"
  grep -q '^URIs:' "$private/parts/trixie.sources" ||
    die "could not read a URIs: line from the first stanza of $src"
}

private_apt() {
  local opts=(
    -o Dir::Etc::SourceList=/dev/null
    -o "Dir::Etc::SourceParts=$private/parts"
    -o "Dir::State::Lists=$private/lists"
    -o "Dir::Cache=$private/cache"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  )
  if [ "$(id -u)" -eq 0 ]; then
    # The private folders are owned by root; apt's _apt sandbox user could not write into them.
    opts+=(-o APT::Sandbox::User=root)
  fi
  apt-get -q "${opts[@]}" "$@"
}

# link NAME PKGDIR CANDIDATE...: symlink .backends/bin/NAME to the first candidate found in PKGDIR.
link() {
  local name="$1" dir="$2" rel
  shift 2
  for rel in "$@"; do
    if [ -f "$dir/$rel" ] && [ -x "$dir/$rel" ]; then
      ln -sfn "../${dir#"$backends/"}/$rel" "$bindir/$name"
      return 0
    fi
  done
  return 1
}

trixie_binaries_present() {
  [ -x "$bindir/victoria-metrics" ] && [ -x "$bindir/vmagent" ] && [ -x "$bindir/docker-compose" ]
}

if trixie_binaries_present; then
  echo "victoria-metrics, vmagent, docker-compose (trixie .debs): already present"
else
  write_private_sources
  private_apt update >"$private/update.log" 2>&1 ||
    die "apt-get update for the private trixie lists failed; see $private/update.log"
  mkdir -p "$private/debs"
  rm -f "$private/debs/"*.deb
  (cd "$private/debs" && private_apt download victoria-metrics docker-compose) \
    >"$private/download.log" 2>&1 ||
    die "apt-get download victoria-metrics docker-compose failed; see $private/download.log"
  for pkg in victoria-metrics docker-compose; do
    deb="$(find "$private/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)"
    [ -n "$deb" ] || die "no ${pkg} .deb was downloaded; see $private/download.log"
    rm -rf "${backends:?}/$pkg"
    mkdir -p "$backends/$pkg"
    dpkg-deb -x "$deb" "$backends/$pkg"
  done
  vm="$backends/victoria-metrics"
  dc="$backends/docker-compose"
  link victoria-metrics "$vm" usr/bin/victoria-metrics usr/bin/victoria-metrics-prod ||
    die "victoria-metrics binary not found in the unpacked .deb under $vm"
  link vmagent "$vm" usr/bin/vmagent usr/bin/vmagent-prod ||
    die "vmagent binary not found in the unpacked .deb under $vm"
  link docker-compose "$dc" usr/bin/docker-compose usr/libexec/docker/cli-plugins/docker-compose \
    usr/lib/docker/cli-plugins/docker-compose ||
    die "docker-compose binary not found in the unpacked .deb under $dc"
  trixie_binaries_present || die "trixie binaries were unpacked but are not executable"
  echo "victoria-metrics, vmagent, docker-compose (trixie .debs): installed into .backends/bin"
fi

# --- 3. oteltap into the project venv -------------------------------------------------------------
py="$root/.venv/bin/python"
[ -x "$py" ] || die "no project venv at .venv; run scripts/venv.sh dev first"
if "$py" -c "import oteltap" >/dev/null 2>&1; then
  echo "oteltap (PyPI): already present"
else
  "$py" -m pip install --quiet --disable-pip-version-check oteltap ||
    die "pip install oteltap failed"
  echo "oteltap (PyPI): installed"
fi

# --- 4. npm packages of the dashboards' type check (scripts/dashboards-typecheck) ------------------
# @grafana/schema and typescript, at the versions of its package-lock.json; again when that changes.
typecheck="$root/scripts/dashboards-typecheck"
if [ -f "$typecheck/node_modules/.package-lock.json" ] &&
  [ ! "$typecheck/package-lock.json" -nt "$typecheck/node_modules/.package-lock.json" ]; then
  echo "dashboards type-check packages (npm): already present"
else
  command -v npm >/dev/null 2>&1 || die "npm is missing (node 20 and npm are needed)"
  (cd "$typecheck" && npm ci --no-audit --no-fund) >"$backends/npm-ci.log" 2>&1 ||
    die "npm ci in scripts/dashboards-typecheck failed; see $backends/npm-ci.log"
  echo "dashboards type-check packages (npm): installed"
fi

#!/usr/bin/env bash
# Provide kube-apiserver and kube-controller-manager, built from Debian's
# `kubernetes` source package with Debian's Go, cached outside the repository.
#
# No prebuilt kube-apiserver is packaged, so the first run downloads the source
# package (its Go dependencies are vendored) and builds it (~10 min on 2 cores).
# The result lives in <cache>/<debian source version>/ and later runs only check
# it. etcd comes from the `etcd-server` package and stays on PATH.
#
# Usage: scripts/kube-apiserver.sh
#   stdout: one line, the absolute bin dir holding both binaries.
#   stderr: progress and errors.
# Environment:
#   PORTCULLIS_KUBE_CACHE    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/kube)
#   PORTCULLIS_KUBE_REFRESH  1 = refresh the private source index (may pick a newer version)
#   PORTCULLIS_KUBE_SOURCES  a deb822 file of deb-src entries to use instead of
#                            deriving them from the system's apt sources
set -euo pipefail

me=kube-apiserver.sh
log() { echo "$me: $*" >&2; }
die() { echo "$me: ERROR: $*" >&2; exit 1; }

# Bump when the build recipe changes, so older caches of the same version are rebuilt.
recipe=2
root=${PORTCULLIS_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/kube}
aptdir=$root/.apt

# --- tools -------------------------------------------------------------------
# command -> Debian package providing it. Missing ones are installed when we
# are root (the project must install what it needs); otherwise we stop.
declare -A pkg_of=(
  [go]=golang-go [rsync]=rsync [make]=make [dpkg-source]=dpkg-dev
  [etcd]=etcd-server [flock]=util-linux [apt-get]=apt
)
ensure_tools() {
  local missing=() cmd
  for cmd in "${!pkg_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ " ${missing[*]} " == *" apt "* ]] && die "apt-get not found: this script needs a Debian-based system"
  if [[ $(id -u) != 0 ]]; then
    die "missing packages: ${missing[*]} (run as root: apt-get install ${missing[*]})"
  fi
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get -o DPkg::Lock::Timeout=600 update >&2 \
         && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2; } \
    || die "apt-get install ${missing[*]} failed"
  for cmd in "${!pkg_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' still missing after installing ${pkg_of[$cmd]}"
  done
}

# --- private apt configuration ----------------------------------------------
# deb-src entries live in our own dir so the system's apt setup is untouched.
apt_opts=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
  -o "Dir::State::Lists=$aptdir/lists"
  -o "Dir::Cache=$aptdir/cache"
)
# As root, apt drops to the _apt user, who cannot write into our dirs.
[[ $(id -u) == 0 ]] && apt_opts+=(-o "APT::Sandbox::User=root")

# Turn the system's binary entries for this release into deb-src entries, so we
# use the same mirror as the machine (and name no mirror here).
derive_sources() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n $codename ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
  shopt -s nullglob
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    # deb822: one stanza per paragraph; keep those whose Suites are this release.
    awk -v cn="$codename" 'BEGIN { RS = ""; ORS = "\n\n" }
      {
        keep = 0; n = split($0, lines, "\n"); out = ""
        for (i = 1; i <= n; i++) {
          l = lines[i]
          if (l ~ /^Types:/) { if (l !~ /[ \t]deb([ \t]|$)/) next; l = "Types: deb-src" }
          if (l ~ /^Suites:/) {
            m = split(l, s, /[ \t]+/)
            for (j = 2; j <= m; j++) if (s[j] == cn || index(s[j], cn "-") == 1) keep = 1
          }
          if (l ~ /^Enabled:[ \t]*no/) next
          out = out l "\n"
        }
        if (keep) print out
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # one-line format: "deb [opts] URI SUITE COMPONENTS..."
    awk -v cn="$codename" '$1 == "deb" {
        line = $0; sub(/^deb[ \t]+/, "", line)
        opts = ""; if (line ~ /^\[/) { opts = substr(line, 1, index(line, "]")); line = substr(line, index(line, "]") + 1) }
        n = split(line, w, /[ \t]+/); if (w[1] == "") { for (i = 1; i < n; i++) w[i] = w[i+1]; n-- }
        if (w[2] == cn || index(w[2], cn "-") == 1) print "deb-src " opts " " line
      }' "$f" > "$aptdir/tmp-oneline"
    if [[ -s $aptdir/tmp-oneline ]]; then
      cat "$aptdir/tmp-oneline" > "$aptdir/sources.list.d/from-$(basename "$f" .list).list"
    fi
    rm -f "$aptdir/tmp-oneline"
  done
}

refresh_index() {
  log "refreshing private source index in $aptdir"
  rm -rf "$aptdir/sources.list.d" "$aptdir/lists"
  mkdir -p "$aptdir/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
  if [[ -n ${PORTCULLIS_KUBE_SOURCES:-} ]]; then
    [[ -f $PORTCULLIS_KUBE_SOURCES ]] || die "PORTCULLIS_KUBE_SOURCES=$PORTCULLIS_KUBE_SOURCES is not a file"
    cp "$PORTCULLIS_KUBE_SOURCES" "$aptdir/sources.list.d/custom.sources"
  else
    derive_sources > "$aptdir/sources.list.d/derived.sources"
  fi
  if ! grep -rqs "deb-src" "$aptdir/sources.list.d"; then
    die "no deb-src entry to use (none derived from /etc/apt for this release, or none in PORTCULLIS_KUBE_SOURCES); set PORTCULLIS_KUBE_SOURCES to a deb822 file with one"
  fi
  apt-get "${apt_opts[@]}" update >&2 || die "apt-get update of the private source index failed"
  touch "$aptdir/lists/.complete"
}

source_version() {
  apt-cache "${apt_opts[@]}" showsrc kubernetes 2>/dev/null \
    | awk '/^Version:/ { print $2 }' | sort -V | tail -n1
}

# --- cache check -------------------------------------------------------------
cache_ok() {
  local d=$1
  [[ -x $d/bin/kube-apiserver && -x $d/bin/kube-controller-manager ]] \
    && grep -qx "recipe=$recipe" "$d/stamp" 2>/dev/null
}

# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, which breaks under Go >= 1.18:
# the API server then panics while JSON-encoding some types (seen on
# GET .../serviceaccounts). Debian packages the fixed 1.0.2, so swap its
# sources into vendor/ (GOPATH build: no module checksums to update).
fix_reflect2() {
  local work=$1 srcdir=$2 vend=$2/vendor/github.com/modern-go/reflect2
  grep -qE '^# github.com/modern-go/reflect2 v1\.0\.[01]( |$)' "$srcdir/vendor/modules.txt" || return 0
  log "replacing vendored reflect2 1.0.1 with Debian's fixed source"
  mkdir -p "$work/reflect2"
  (cd "$work/reflect2" && apt-get "${apt_opts[@]}" source golang-github-modern-go-reflect2 >&2) \
    || die "apt-get source golang-github-modern-go-reflect2 failed"
  local fixed
  fixed=$(find "$work/reflect2" -mindepth 1 -maxdepth 1 -type d -name 'golang-github-modern-go-reflect2-*' | head -n1)
  [[ -n $fixed && -f $fixed/go_above_118.go ]] || die "reflect2 source lacks the Go 1.18 fix (go_above_118.go)"
  find "$vend" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
  find "$fixed" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name LICENSE \) ! -name '*_test.go' \
    -exec cp {} "$vend/" \;
}

build_into() {
  local version=$1 work=$2
  log "building kubernetes $version with $(go version) (about 10 minutes on 2 cores)"
  mkdir -p "$work/src"
  (cd "$work/src" && apt-get "${apt_opts[@]}" source "kubernetes=$version" >&2) \
    || die "apt-get source kubernetes=$version failed"
  local srcdir
  srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [[ -n $srcdir && -f $srcdir/Makefile ]] || die "unpacked kubernetes source not found in $work/src"
  fix_reflect2 "$work" "$srcdir"
  # Settings as in Debian's debian/rules; a private GOCACHE keeps ~/.cache clean
  # and the cold build honest. nice: the machine's cores are shared.
  (
    cd "$srcdir"
    export GOPATH=$work/gopath GOCACHE=$work/gocache CGO_ENABLED=0 GOFLAGS=
    nice -n 10 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
  ) || die "make WHAT=cmd/kube-apiserver cmd/kube-controller-manager failed (see output above)"
  mkdir -p "$work/out/bin"
  local b
  for b in kube-apiserver kube-controller-manager; do
    [[ -x $srcdir/_output/bin/$b ]] || die "build finished but _output/bin/$b is missing"
    cp -L "$srcdir/_output/bin/$b" "$work/out/bin/$b"
  done
  {
    echo "recipe=$recipe"
    echo "source=kubernetes $version"
    echo "go=$(go version)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    "$work/out/bin/kube-apiserver" --version
    (cd "$work/out/bin" && sha256sum kube-apiserver kube-controller-manager)
  } > "$work/out/stamp"
}

main() {
  ensure_tools
  mkdir -p "$root"
  # One builder at a time; a second caller waits and then finds the cache.
  exec 9>"$root/.lock"
  flock 9
  # We hold the lock, so any build tree here is a leftover of a killed run.
  find "$root" -mindepth 1 -maxdepth 1 -name '.build.*' -exec rm -rf {} +

  if [[ ${PORTCULLIS_KUBE_REFRESH:-0} == 1 || ! -f $aptdir/lists/.complete ]]; then
    refresh_index
  fi
  local version
  version=$(source_version)
  [[ -n $version ]] || die "no 'kubernetes' source package in the index (try PORTCULLIS_KUBE_REFRESH=1)"
  local dest=$root/$version
  if ! cache_ok "$dest"; then
    local work
    work=$(mktemp -d "$root/.build.XXXXXX")
    # shellcheck disable=SC2064 # expand $work now
    trap "rm -rf '$work'" EXIT
    local t0=$SECONDS
    build_into "$version" "$work"
    # Same filesystem: rename(2) publishes the whole dir at once. An outdated
    # or broken dir is moved aside first and deleted with the build tree.
    [[ -e $dest ]] && mv -T "$dest" "$work/old"
    mv -T "$work/out" "$dest"
    log "built in $((SECONDS - t0)) s"
    # Let waiting callers go before the slow delete of the build tree.
    flock -u 9
    rm -rf "$work"
    trap - EXIT
  fi
  log "kubernetes $version ready; etcd: $(command -v etcd)"
  echo "$dest/bin"
}

main "$@"

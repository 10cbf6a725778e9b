#!/bin/sh
# Install every Debian package that building, testing, benchmarking and the
# demo need. Idempotent; does nothing (fast) when all are present.
set -eu
PKGS="make gcc clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev pkg-config
libssl-dev openssl libyaml-dev libidn2-dev libjansson-dev libnftnl-dev libmnl-dev node-llhttp
libnghttp2-dev libcurl4-openssl-dev libcriterion-dev libclang-rt-14-dev
iproute2 procps psmisc jq xxd curl python3 nodejs nginx-light wrk ca-certificates"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install)" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# nginx is only a benchmark/test upstream: never let its postinst start a service.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.sluice
[ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.sluice /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
rm -f /usr/sbin/policy-rc.d.sluice
apt-get install -y -qq --no-install-recommends $missing

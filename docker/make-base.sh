#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, made locally for machines without access to
# an image registry (as the development machine): debootstrap from a Debian mirror, the host's
# CA bundle (so pip inside the build trusts what the host trusts), then `podman import`.
# Needs root, debootstrap and podman. Then:
#   podman build --isolation chroot --build-arg BASE=localhost/feedflow-base:bookworm \
#     -f docker/Dockerfile -t feedflow .
set -euo pipefail
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | podman import - localhost/feedflow-base:bookworm

#!/bin/sh
# meson install script: installs a config file unless the target directory
# already holds one of that name, so that reinstalling never overwrites what
# an operator edited.  usage: install-config.sh FILE DIR (DIR absolute;
# meson sets DESTDIR for a staged install).
set -eu
dir="${DESTDIR:-}$2"
target="$dir/$(basename "$1")"
if [ -e "$target" ]; then
    echo "Keeping $target: it may hold local changes (the new default is $1)"
    exit 0
fi
mkdir -p "$dir"
install -m 0644 "$1" "$target"
echo "Installing $1 to $dir"

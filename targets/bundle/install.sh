#!/bin/sh
# Installs or upgrades cncopgetprofile from this bundle into an install root.
#
#   sh install.sh [--crontabs DIR] [--no-cron] [--no-run-check] ROOT
#
# Written for busybox ash (the appliances have no bash); any POSIX sh works.
#
# - ROOT/bin/cncopgetprofile: copied beside as a temporary file, checked,
#   then renamed over the old one, so a run starting at any moment finds the
#   old binary or the new one, never a part of one (a run already going on
#   keeps the old file open).
# - ROOT/Config/cncop3.ini is never overwritten: the sample is installed as
#   cncop3.ini only when there is none; it is always refreshed as
#   ROOT/Config/cncop3.ini.sample, which documents every key.
# - ROOT/Spool/Logs is created; modes: bin 0755, the binary 0755, Config
#   0750, a new cncop3.ini 0600 (it holds the device key), Spool 0755,
#   Spool/Logs 0750.
# - One crontab line, "M * * * * ROOT/bin/cncopgetprofile" with a random
#   minute M, in the crontab of the user running this script. Idempotent: a
#   crontab that already runs ROOT/bin/cncopgetprofile is left as it is.
#   --crontabs DIR: the crontab directory (busybox `crontab -c DIR`; the
#   default is busybox's, /var/spool/cron/crontabs). --no-cron: no crontab.
# - The new binary must run here (`--version`) before it replaces anything;
#   --no-run-check skips that, to install into a root for another machine
#   (a firmware image being built, an emulator).
set -eu

say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
usage() { echo "usage: sh install.sh [--crontabs DIR] [--no-cron] [--no-run-check] ROOT" >&2; exit 2; }

crontabs=""
cron=yes
run_check=yes
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --crontabs) [ $# -ge 2 ] || usage; crontabs=$2; shift 2 ;;
        --crontabs=*) crontabs=${1#--crontabs=}; shift ;;
        --no-cron) cron=no; shift ;;
        --no-run-check) run_check=no; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$root" ] || usage; root=$1; shift ;;
    esac
done
[ -n "$root" ] || usage

here=$(cd "$(dirname "$0")" && pwd)
new_bin="$here/bin/cncopgetprofile"
[ -f "$new_bin" ] || die "$new_bin is missing: run install.sh from an unpacked bundle"
[ -f "$here/Config/cncop3.ini.sample" ] || die "$here/Config/cncop3.ini.sample is missing"

# ELF class, byte order and machine: compared with this machine's own tools
# before the new binary is run at all (a shell runs a file the kernel
# refuses to execute as a script).
elf_id() { od -An -tx1 -j4 -N2 "$1" | tr -d ' \n'; od -An -tx1 -j18 -N2 "$1" | tr -d ' \n'; }
refuse() {
    die "the bundle's binary does not run on this machine ($1; a bundle for another CPU?); nothing was changed (--no-run-check installs anyway)"
}
if [ "$run_check" = yes ]; then
    if [ -r /proc/self/exe ] && [ "$(elf_id "$new_bin")" != "$(elf_id /proc/self/exe)" ]; then
        refuse "built for another ELF machine"
    fi
    version=$("$new_bin" --version 2>/dev/null) || refuse "--version failed"
    [ -n "$version" ] || refuse "--version printed nothing"
else
    version="(not run: --no-run-check)"
fi
# The root goes into a crontab line unquoted (busybox crond runs it with sh).
case "$root" in
    /*) ;;
    *) root="$(pwd)/$root" ;;
esac
case "$root" in
    *[!A-Za-z0-9/._+-]*) die "the install root '$root' must hold only A-Z a-z 0-9 / . _ + -" ;;
esac
mkdir -p "$root" || die "cannot create $root"
root=$(cd "$root" && pwd)

umask 022
mkdir -p "$root/bin" "$root/Config" "$root/Spool/Logs"
chmod 0755 "$root/bin" "$root/Spool"
chmod 0750 "$root/Config" "$root/Spool/Logs"

# --- the binary: copy beside, rename over ---------------------------------
bin="$root/bin/cncopgetprofile"
tmp="$root/bin/.cncopgetprofile.new.$$"
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
cp "$new_bin" "$tmp"
chmod 0755 "$tmp"
old=""
if [ -f "$bin" ] && [ "$run_check" = yes ]; then
    old=$("$bin" --version 2>/dev/null || true)
fi
mv -f "$tmp" "$bin"
trap - EXIT
if [ -n "$old" ]; then
    say "upgraded $bin: $old -> $version"
else
    say "installed $bin: $version"
fi

# --- configuration: never overwrite cncop3.ini -----------------------------
ini="$root/Config/cncop3.ini"
cp "$here/Config/cncop3.ini.sample" "$root/Config/.cncop3.ini.sample.new.$$"
chmod 0644 "$root/Config/.cncop3.ini.sample.new.$$"
mv -f "$root/Config/.cncop3.ini.sample.new.$$" "$ini.sample"
if [ -e "$ini" ]; then
    say "kept $ini (the current sample is $ini.sample)"
else
    # Through a temporary name, so a half-copied file is never cncop3.ini.
    cp "$here/Config/cncop3.ini.sample" "$ini.new.$$"
    chmod 0600 "$ini.new.$$"
    mv -f "$ini.new.$$" "$ini"
    say "installed $ini from the sample: set [device] id and key and [network] url"
fi

# --- crontab: one line, random minute, idempotent --------------------------
if [ "$cron" = yes ]; then
    command -v crontab >/dev/null 2>&1 || die "no crontab command (busybox crontab); use --no-cron and add a line as in crontab.example"
    if [ -n "$crontabs" ]; then
        mkdir -p "$crontabs"
        set -- crontab -c "$crontabs"
    else
        set -- crontab
    fi
    current="$root/Spool/.crontab.$$"
    trap 'rm -f "$current" "$current.err"' EXIT
    # No crontab yet: `crontab -l` fails saying so (busybox: "can't open
    # 'root': No such file or directory"; others: "no crontab for root");
    # start from an empty one. Any other failure stops here: writing a new
    # table over one that could not be read would lose its jobs.
    if ! "$@" -l > "$current" 2> "$current.err"; then
        grep -Eqi 'no such file|no crontab' "$current.err" \
            || die "cannot read the current crontab ($(cat "$current.err")); no line added"
        : > "$current"
    fi
    if awk -v b="$bin" '!/^[[:space:]]*#/ { for (i = 1; i <= NF; i++) if ($i == b) f = 1 }
                        END { exit !f }' "$current"; then
        say "crontab already runs $bin: kept"
    else
        rnd=$(od -An -N2 -tu2 /dev/urandom | tr -d ' \n')
        line="$((rnd % 60)) * * * * $bin"
        echo "$line" >> "$current"
        "$@" "$current" || die "crontab refused the new table"
        say "crontab: added '$line'"
    fi
    rm -f "$current" "$current.err"
    trap - EXIT
fi

say "done; check it with: $bin -d && $bin --status"

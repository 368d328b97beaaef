#!/usr/bin/env python3
"""Baseline for benches/footprint: the profile download as the suite's original
Python module would have done it (standard library only).

    CNCOP_HOME=ROOT python3 benches/baseline.py [-c CONFIG]

- reads Config/cncop3.ini with configparser ([device] id/key, [network] url,
  ca_file relative to the install root);
- GET {url}/v3/devices/{id}/profile with urllib over TLS (ssl context pinned to
  the CA file), HTTP Basic, Accept: application/xml and If-None-Match with the
  stored ETag;
- 304: writes nothing; 200: streams the body through
  xml.etree.ElementTree.iterparse (elements cleared as it goes) into sqlite3,
  Config/backupjobs.sqlite: one table of jobs (main fields as columns, child
  lists as JSON text), ETag and generated time in a meta table, the old jobs
  replaced in one transaction (rolled back on any error);
- then runs the reporter (bin/cncopreporter -c CONFIG), as the agent does.

Exit codes follow PROTOCOL.md loosely: 0 ok, 2 config, 3 network, 4 auth,
5 profile rejected, 6 store.
"""
import argparse
import base64
import http.client
import configparser
import json
import os
import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

STORE = "backupjobs.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    schedule TEXT,
    retries INTEGER NOT NULL,
    target_host TEXT,
    target_port INTEGER,
    target_user TEXT,
    cred_user TEXT,
    cred_password TEXT,
    pre TEXT,
    post TEXT,
    sources TEXT NOT NULL,
    excludes TEXT NOT NULL,
    emails TEXT NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
TYPES = {"CCS", "CIFS", "FTP", "FTPS", "MSSQL", "SFTP", "RSYNC", "WIMG"}


class Rejected(Exception):
    pass


def stored_etag(db_path):
    """The ETag of the stored profile, opening the store read-only."""
    if not os.path.exists(db_path):
        return None
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(db_path)}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'etag'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def job_row(job):
    a = job.attrib
    jid = a.get("id")
    if not jid or not a.get("name") or a.get("type") not in TYPES:
        raise Rejected(f"job {jid!r}: id, name and a known type are required")
    row = {
        "id": jid, "name": a["name"], "type": a["type"],
        "enabled": 0 if a.get("enabled", "yes") == "no" else 1,
        "schedule": a.get("schedule"), "retries": int(a.get("retries", "0")),
        "target_host": None, "target_port": None, "target_user": None,
        "cred_user": None, "cred_password": None, "pre": None, "post": None,
    }
    sources, excludes, emails, options = [], [], [], []
    for child in job:
        c = child.attrib
        if child.tag == "source":
            sources.append(c.get("path"))
        elif child.tag == "exclude":
            excludes.append(c.get("pattern"))
        elif child.tag == "target":
            row["target_host"] = c.get("host")
            row["target_port"] = int(c["port"]) if "port" in c else None
            row["target_user"] = c.get("user")
        elif child.tag == "credential":
            row["cred_user"] = c.get("user")
            row["cred_password"] = c.get("password")
        elif child.tag in ("pre", "post"):
            row[child.tag] = child.text or ""
        elif child.tag == "email":
            emails.append({"to": c.get("to"), "when": c.get("when")})
        elif child.tag == "option":
            options.append({"name": c.get("name"), "value": c.get("value")})
    row["sources"] = json.dumps(sources)
    row["excludes"] = json.dumps(excludes)
    row["emails"] = json.dumps(emails)
    row["options"] = json.dumps(options)
    return row


def ingest(stream, con, device, etag):
    """Parses the profile from `stream` into the jobs table, in the caller's
    transaction. Returns the number of jobs."""
    cols = ("id name type enabled schedule retries target_host target_port target_user "
            "cred_user cred_password pre post sources excludes emails options").split()
    sql = f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    con.execute("DELETE FROM jobs")
    n = 0
    depth = 0
    jobs_elem = None
    generated = None
    for event, elem in ET.iterparse(stream, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth == 1:
                if elem.tag != "profile":
                    raise Rejected(f"root element is <{elem.tag}>, not <profile>")
                if elem.get("schema") != "3":
                    raise Rejected(f"profile schema {elem.get('schema')!r}, this agent speaks 3")
                if elem.get("device") != device:
                    raise Rejected(f"profile is for device {elem.get('device')!r}, not {device!r}")
                generated = elem.get("generated")
            elif depth == 2 and elem.tag == "jobs":
                jobs_elem = elem
            continue
        depth -= 1
        if depth == 2 and elem.tag == "job" and jobs_elem is not None:
            row = job_row(elem)
            con.execute(sql, [row[c] for c in cols])
            n += 1
            elem.clear()
            jobs_elem.clear()  # drop the finished job from its parent too
    con.execute("INSERT OR REPLACE INTO meta VALUES ('etag', ?)", (etag,))
    con.execute("INSERT OR REPLACE INTO meta VALUES ('generated', ?)", (generated,))
    return n


def main():
    ap = argparse.ArgumentParser(description="cncop profile download, Python baseline")
    ap.add_argument("-c", dest="config")
    args = ap.parse_args()
    root = os.environ.get("CNCOP_HOME") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = args.config or os.path.join(root, "Config", "cncop3.ini")
    ini = configparser.ConfigParser(interpolation=None)
    if not ini.read(config):
        print(f"baseline: cannot read {config}", file=sys.stderr)
        return 2
    device = ini.get("device", "id")
    key = ini.get("device", "key")
    url = ini.get("network", "url").rstrip("/")
    ca = ini.get("network", "ca_file", fallback=None)
    ctx = ssl.create_default_context(cafile=os.path.join(root, ca) if ca else None)

    db_path = os.path.join(root, "Config", STORE)
    etag = stored_etag(db_path)
    req = urllib.request.Request(f"{url}/v3/devices/{urllib.parse.quote(device)}/profile")
    req.add_header("Accept", "application/xml")
    req.add_header("User-Agent", "cncop-python-baseline/1")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{device}:{key}".encode()).decode())
    if etag:
        req.add_header("If-None-Match", etag)

    code = 0
    try:
        resp = urllib.request.urlopen(req, context=ctx, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 304:
            resp = None
            print("baseline: profile unchanged (304)", file=sys.stderr)
        else:
            print(f"baseline: HTTP {e.code}", file=sys.stderr)
            return 4 if e.code in (401, 403, 404) else 3
    except OSError as e:
        print(f"baseline: {e}", file=sys.stderr)
        return 3

    if resp is not None:
        old_umask = os.umask(0o077)  # the store holds credentials
        try:
            con = sqlite3.connect(db_path, isolation_level=None)
        finally:
            os.umask(old_umask)
        try:
            con.executescript(SCHEMA)
            con.execute("BEGIN")
            try:
                n = ingest(resp, con, device, resp.headers.get("ETag"))
                con.execute("COMMIT")
                print(f"baseline: profile stored, {n} jobs", file=sys.stderr)
            except (Rejected, ET.ParseError, ValueError, http.client.HTTPException) as e:
                con.execute("ROLLBACK")
                print(f"baseline: profile rejected: {e}", file=sys.stderr)
                code = 5
            except (sqlite3.Error, OSError) as e:
                con.execute("ROLLBACK")
                print(f"baseline: store error: {e}", file=sys.stderr)
                code = 6
        finally:
            con.close()
            resp.close()

    reporter = os.path.join(root, "bin", "cncopreporter")
    if os.path.exists(reporter):
        try:
            subprocess.run([reporter, "-c", config], stdin=subprocess.DEVNULL, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"baseline: reporter: {e}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

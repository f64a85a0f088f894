"""Getters the OSWorld corpus uses that desktop-env 1.0.2 lacks, written for kimi-agent to the
semantics of OSWorld's public code (desktop_env/evaluators/getters/chrome.py, upstream commit
87df18ff). Loaded by worker.py after the official module, so an official getter always wins.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any

# Reads the appearance mode off chrome://settings/appearance: first the settings page's own prefs
# (browser.theme.color_scheme / color_scheme2: 0 system, 1 light, 2 dark; extensions.theme.system_theme:
# 0 light, 1 dark), then the text of the checked controls through every shadow root. Light wins over
# dark over system, as upstream.
_PROBE = r"""
() => {
  const low = (s) => String(s ?? '').toLowerCase();
  const prefs = new Set(['prefs.browser.theme.color_scheme', 'prefs.browser.theme.color_scheme2',
                         'prefs.extensions.theme.system_theme']);
  const found = [];
  const seen = new Set();
  const walk = (o, path) => {
    if (!o || typeof o !== 'object' || seen.has(o)) return;
    seen.add(o);
    if ('value' in o && prefs.has(low(path))) {
      const v = low(o.value);
      if (low(path).endsWith('system_theme')) {
        if (v === '0' || v === 'false') found.push('light');
        if (v === '1' || v === 'true') found.push('dark');
      } else {
        if (v === '1' || v === 'light') found.push('light');
        if (v === '2' || v === 'dark') found.push('dark');
        if (['0', 'system', 'default', 'device'].includes(v)) found.push('system');
      }
    }
    for (const [k, v] of Object.entries(o)) walk(v, path ? path + '.' + k : k);
  };
  try { const ui = document.querySelector('settings-ui'); walk(ui && ui.prefs, 'prefs'); } catch (e) {}
  try {
    const roots = [document];
    for (let i = 0; i < roots.length; i++)
      for (const el of roots[i].querySelectorAll('*')) if (el.shadowRoot) roots.push(el.shadowRoot);
    for (const r of roots)
      for (const el of r.querySelectorAll('[selected],[checked],[aria-checked="true"],option:checked')) {
        const t = low((el.innerText || el.textContent || '').trim());
        if (t.includes('light')) found.push('light');
        else if (t.includes('dark')) found.push('dark');
        else if (t.includes('device') || t.includes('system') || t.includes('default')) found.push('system');
      }
  } catch (e) {}
  for (const m of ['light', 'dark', 'system']) if (found.includes(m)) return m;
  return null;
}
"""

# Profiles whose Preferences may hold the setting, newest first: google-chrome's (Default, Guest
# Profile, Profile *), as upstream looks (a sandbox's google-chrome uses Chrome's profile path too).
_PREFERENCES_PROBE = r"""
import glob, json, os
found = []
for root in ('~/.config/google-chrome', '/home/user/.config/google-chrome'):
    root = os.path.expanduser(root)
    for pattern in ('Default', 'Guest Profile', 'Profile *'):
        for p in glob.glob(os.path.join(root, pattern, 'Preferences')):
            if os.path.isfile(p) and p not in [f[0] for f in found]:
                found.append((p, os.path.getmtime(p)))
found.sort(key=lambda f: -f[1])
print(json.dumps([f[0] for f in found]))
"""


def _mode_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return {0: "system", 1: "light", 2: "dark"}.get(int(value))
    if isinstance(value, str):
        v = value.strip().lower()
        return {"system": "system", "default": "system", "0": "system", "light": "light", "1": "light"}.get(
            v, "dark" if v in ("dark", "2") else None
        )
    return None


def _mode_from_preferences(data: dict[str, Any]) -> str:
    theme = data.get("browser", {}).get("theme", {})
    mode = _mode_of(theme.get("color_scheme2", theme.get("color_scheme")))
    # Linux builds may record the change only in extensions.theme.system_theme (upstream's fallback).
    if data.get("extensions", {}).get("theme", {}).get("system_theme") in (0, "0", False):
        return "light"
    return mode or "system"


def _color_scheme_from_preferences(env: Any, config: dict[str, Any]) -> str:
    """The mode written in the newest profile's Preferences, polled for up to 5 s because Chrome
    writes the file a moment after the toggle; an explicit light/dark beats system."""
    try:
        out = env.controller.execute_python_command(_PREFERENCES_PROBE)["output"].strip()
        paths = json.loads(out)
    except Exception:
        paths = ["/home/user/.config/google-chrome/Default/Preferences"]  # upstream's fallback
    if not paths:
        # No profile at all: upstream polls its fallback path 5 times (a minute of the controller's
        # retries) to end at "system"; so do we, at once.
        return "system"
    final = "system"
    for _ in range(5):
        best = None
        for path in paths:
            try:
                content = env.controller.get_file(path)
                mode = _mode_from_preferences(json.loads(content)) if content else None
            except Exception:
                continue
            if mode in ("light", "dark"):
                best = mode
                break
            best = best or mode
        if best is not None:
            final = best
            if best == "light":
                return "light"
        time.sleep(1)
    return final


def get_chrome_appearance_mode_ui(env: Any, config: dict[str, Any]) -> str:
    """The mode ("light", "dark" or "system") chrome://settings/appearance shows, over DevTools;
    the profile's Preferences when the browser cannot be reached or the page says nothing."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.connect_over_cdp(f"http://{env.vm_ip}:{env.chromium_port}")
            page = browser.contexts[0].new_page()
            page.goto("chrome://settings/appearance", wait_until="domcontentloaded", timeout=30000)
            page.wait_for_timeout(2500)
            mode = page.evaluate(_PROBE)
            browser.close()
        if mode in ("light", "dark", "system"):
            return mode
    except Exception:
        pass
    return _color_scheme_from_preferences(env, config)


# -- getters desktop-env 1.0.2 has in an older form than the corpus needs ----------------------------
# worker.py prefers these over the official ones of the same name (OVERRIDES).

_AT_NS = {
    "st": "uri:deskat:state.at-spi.gnome.org",
    "attr": "uri:deskat:attributes.at-spi.gnome.org",
    "cp": "uri:deskat:component.at-spi.gnome.org",
    "doc": "uri:deskat:document.at-spi.gnome.org",
    "docattr": "uri:deskat:attributes.document.at-spi.gnome.org",
    "txt": "uri:deskat:text.at-spi.gnome.org",
    "val": "uri:deskat:value.at-spi.gnome.org",
    "act": "uri:deskat:action.at-spi.gnome.org",
}


def get_active_url_from_accessTree(env: Any, config: dict[str, Any]) -> str | None:
    """The active tab's URL, read off the address bar in the accessibility tree.

    Upstream's current form (1.0.2 read the first address bar but checked the last): the focused
    address bar wins, else the last one with text; ``goto_prefix`` (default "https://") is put in
    front unless the text already has a scheme, without doubling "www.". kimi-agent's addition: the
    browser may be Chromium (Debian's stand-in for Chrome on a sandbox), not only Google Chrome."""
    from lxml import etree
    from lxml.cssselect import CSSSelector

    tree = env.controller.get_accessibility_tree()
    if tree is None:
        return None
    root = etree.fromstring(tree.encode() if isinstance(tree, str) else tree)
    bars = []
    for app in ("Google\\ Chrome", "Chromium"):
        selector = CSSSelector(
            f"application[name={app}] entry[name=Address\\ and\\ search\\ bar]", namespaces=_AT_NS
        )
        bars += [e for e in selector(root) if e.text]
    if not bars:
        return None
    focused = [e for e in bars if "true" in (e.get("focused"), e.get(f"{{{_AT_NS['st']}}}focused"))]
    text = (focused or bars)[-1].text.strip()
    prefix = config.get("goto_prefix", "https://") or ""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+\-.]*:", text):
        return text
    if prefix.endswith("www.") and text.lower().startswith("www."):
        text = text[4:]
    return prefix + text


def get_url_dashPart(env: Any, config: dict[str, Any]) -> str | dict[str, str] | None:
    """One "/"-separated part of the active tab's URL (``partIndex``), without its query when
    ``needDeleteId``; as a string or as ``{key: part}`` (``returnType``). As 1.0.2, but over the
    address-bar reading above."""
    url = get_active_url_from_accessTree(env, config)
    if url is None:
        return None
    try:
        index = int(config["partIndex"])
    except (ValueError, TypeError):
        return None
    parts = url.split("/")
    if index >= len(parts):
        return None
    part = parts[index]
    if config.get("needDeleteId", False):
        part = part.split("?")[0]
    if config["returnType"] == "string":
        return part
    if config["returnType"] == "json":
        return {config["key"]: part}
    return None


_DOW = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]  # fmt: skip
_PLAIN_DAYS = {"tomorrow": 1}  # the relative times that are a fixed number of days away


def _format_day(template: str, day: datetime) -> str:
    """Upstream's apply_rules_to_timeFormat: each placeholder replaced once, in this order."""
    for key, value in (
        ("{DoW}", _DOW[day.weekday()]),
        ("{Month}", _MONTHS[day.month - 1][:3]),
        ("{DayD}", str(day.day)),
        ("{Year}", str(day.year)),
        ("{Month0D}", f"{day.month:02d}"),
        ("{month}", _MONTHS[day.month - 1].lower()),
        ("{MonthFull}", _MONTHS[day.month - 1]),
        ("{Day0D}", f"{day.day:02d}"),
        ("{MonthD}", str(day.month)),
    ):
        template = template.replace(key, value, 1)
    return template


def _nth_of_next_month(now: datetime, n: int) -> datetime:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, n, tzinfo=now.tzinfo)


def _first_monday_later(now: datetime, months: int) -> datetime:
    # Upstream's arithmetic, year rollover included: months later, the month's first Monday.
    year = now.year + 1 if now.month > 12 - months else now.year
    first = datetime(year, (now.month + months - 1) % 12 + 1, 1, tzinfo=now.tzinfo)
    return first + timedelta(days=(7 - first.weekday()) % 7)


def _from_day(name: str, now: datetime, single: bool) -> datetime:
    """The day a "from" relative time names (``single``: the rule has no "to")."""
    wd = now.weekday()
    to_next_monday = 7 - wd
    if name in _PLAIN_DAYS:
        return now + timedelta(days=_PLAIN_DAYS[name])
    table: dict[str, Any] = {
        "5th next month": lambda: _nth_of_next_month(now, 5),
        "10th next month": lambda: _nth_of_next_month(now, 10),
        "this month": lambda: now,
        "next Monday": lambda: now + timedelta(days=to_next_monday),
        "first monday four months later": lambda: _first_monday_later(now, 4),
        "first monday eight months later": lambda: _first_monday_later(now, 8),
    }
    if not single:
        table = {
            "this Saturday": lambda: now + timedelta(days=5 - wd),
            "10th next month": lambda: _nth_of_next_month(now, 10),
            "next Monday": lambda: now + timedelta(days=to_next_monday),
            "next Monday split": lambda: now + timedelta(days=to_next_monday),
            "week after next Monday split": lambda: now + timedelta(days=to_next_monday + 7),
            "next Friday": lambda: (
                now + timedelta(days=4 - wd if wd < 4 else 7 if wd == 4 else to_next_monday + 4)
            ),
            "next Saturday": lambda: now + timedelta(days=5 - wd if wd < 5 else 7 if wd == 5 else 6),
            "next week Friday": lambda: now + timedelta(days=to_next_monday + 4),
            "next week Saturday": lambda: now + timedelta(days=to_next_monday + 5),
            "next week Sunday": lambda: now + timedelta(days=to_next_monday + 6),
            "week after next Friday": lambda: now + timedelta(days=to_next_monday + 4 + 7),
            "week after next Saturday": lambda: now + timedelta(days=to_next_monday + 5 + 7),
            "week after next Sunday": lambda: now + timedelta(days=to_next_monday + 6 + 7),
        }
    if name not in table:
        raise ValueError(f"relative time {name!r} is not one OSWorld knows here")
    return table[name]()


def _to_day(name: str, now: datetime, start: datetime, from_name: str) -> datetime:
    """The day a "to" relative time names; some are "the same week/weekend as the from day"."""
    wd = now.weekday()
    if name in _PLAIN_DAYS:
        return now + timedelta(days=_PLAIN_DAYS[name])
    if name == "this Sunday":
        return now + timedelta(days=6 - wd)
    if name == "11th next month":
        return _nth_of_next_month(now, 11)
    if name in ("next Friday", "next Friday split", "week after next Friday split"):
        if from_name in ("next Monday", "next Monday split", "week after next Monday split"):
            return start + timedelta(days=4)
        return now + timedelta(days=4 - wd if wd < 4 else (6 - wd) + 5)
    same_week_as = {
        "next Sunday": ("next Friday", "next Saturday"),
        "next week Sunday": ("next week Friday", "next week Saturday"),
        "week after next Sunday": ("week after next Friday", "week after next Saturday"),
    }
    if name in same_week_as:
        if from_name in same_week_as[name]:
            return start + timedelta(days=6 - start.weekday())
        alone = {"next Sunday": 6 - wd if wd < 6 else 7, "next week Sunday": 7 - wd + 6}
        return now + timedelta(days=alone.get(name, 7 - wd + 6 + 7))
    raise ValueError(f"relative time {name!r} is not one OSWorld knows here")


def _machine_now(env: Any, zone: str | None) -> datetime:
    """Now as the machine sees it (upstream: the VM's clock, so grader and agent agree on the day),
    in the rule's timezone if it names one. Unreachable machine: the scoring host's clock in that
    timezone, else UTC (upstream asks an IP geolocation service; the scorer stays off the network)."""
    import pytz

    tz = None
    if zone:
        with contextlib.suppress(pytz.exceptions.UnknownTimeZoneError):
            tz = pytz.timezone(zone)
    try:
        out = env.controller.execute_python_command(
            "from datetime import datetime; print(datetime.now().astimezone().isoformat())"
        )
        now = datetime.fromisoformat(out["output"].strip())
        return now.astimezone(tz) if tz else now
    except Exception:
        return datetime.now(tz or pytz.UTC)


def get_rule_relativeTime(env: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The rule with its relative dates ("next Monday", "10th next month", ...) made absolute in
    ``expected``, as upstream: a lone "from" fills ``time`` (a string or, newer, a list of formats);
    "from" + "to" fill ``from`` / ``to``, or the split day/month/year fields (puDay.. / doDay..)."""
    rules = config["rules"]
    relative = rules["relativeTime"]
    expected = rules["expected"]
    now = _machine_now(env, rules.get("timezone"))
    if "to" not in relative:
        day = _from_day(relative["from"], now, single=True)
        time_format = expected["time"]
        expected["time"] = (
            [_format_day(t, day) for t in time_format]
            if isinstance(time_format, list)
            else _format_day(time_format, day)
        )
        return rules
    from_name, to_name = relative["from"], relative["to"]
    start = _from_day(from_name, now, single=False)
    if from_name in ("next Monday split", "week after next Monday split"):
        for key in ("puDay", "puMonth", "puYear"):
            expected[key] = _format_day(expected[key], start)
    else:
        expected["from"] = _format_day(expected["from"], start)
    end = _to_day(to_name, now, start, from_name)
    if to_name in ("next Friday split", "week after next Friday split"):
        for key in ("doDay", "doMonth", "doYear"):
            expected[key] = _format_day(expected[key], end)
    else:
        expected["to"] = _format_day(expected["to"], end)
    return rules

"""Getters the OSWorld corpus uses that desktop-env 1.0.2 lacks, written for kimi-agent to the
semantics of OSWorld's public code (desktop_env/evaluators/getters/chrome.py, upstream commit
87df18ff). Loaded by worker.py after the official module, so an official getter always wins.
"""

from __future__ import annotations

import json
import time
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

# Profiles whose Preferences may hold the setting, newest first. Upstream looks in google-chrome's
# profiles (Default, Guest Profile, Profile *); ~/.config/chromium is kimi-agent's addition for
# sandboxes where Debian's Chromium stands in for Chrome.
_PREFERENCES_PROBE = r"""
import glob, json, os
found = []
for root in ('~/.config/google-chrome', '/home/user/.config/google-chrome', '~/.config/chromium'):
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
        out = env.controller.execute_python_command(_PREFERENCES_PROBE).get("output", "").strip()
        paths = json.loads(out) if out else []
    except Exception:
        paths = []
    if not paths:
        paths = ["/home/user/.config/google-chrome/Default/Preferences"]
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

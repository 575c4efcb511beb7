"""Debian's chromium for Playwright: `playwright install` cannot download a browser here."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling hosts this closed
# network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

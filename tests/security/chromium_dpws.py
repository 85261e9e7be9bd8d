#!/usr/bin/env python3
"""Headless Chromium (through chromedriver and Selenium) runs the seed's
"Disabling Services" step on the twin's webpages.

Usage: chromium_dpws.py BASE_URL USER PASSWORD SCREENSHOT

Opens BASE_URL/settings without a session (must land on the login page),
logs in, opens Settings, turns DPWS off, saves, and saves a screenshot.
Prints one JSON object with what it saw.
"""
import json
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main():
    base, user, password, shot = sys.argv[1:5]
    profile = tempfile.mkdtemp(prefix="fieldtwin-security-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={profile}", "--ignore-certificate-errors", "--window-size=1200,1400"]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    driver.implicitly_wait(5)
    out = {}
    try:
        driver.get(base + "/settings")
        out["bookmark_landed_on"] = driver.current_url
        driver.find_element(By.ID, "username").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(password)
        driver.find_element(By.ID, "login").click()
        out["after_login"] = driver.current_url
        out["after_login_title"] = driver.title
        out["home_firmware"] = driver.find_element(By.ID, "firmware-version").text
        driver.find_element(By.LINK_TEXT, "Settings").click()
        box = driver.find_element(By.ID, "dpws")
        out["dpws_was_checked"] = box.is_selected()
        if box.is_selected():
            box.click()
        driver.find_element(By.ID, "save-network-communication").click()
        out["message"] = driver.find_element(By.ID, "message").text
        out["dpws_now_checked"] = driver.find_element(By.ID, "dpws").is_selected()
        driver.save_screenshot(shot)
    except Exception:
        out["page"] = driver.page_source[:3000]
        out["url"] = driver.current_url
        print(json.dumps(out))
        raise
    finally:
        driver.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

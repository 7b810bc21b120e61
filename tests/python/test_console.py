"""The web console in a real browser (headless Chromium through Selenium and chromedriver, as
Debian packages them): the Ask-Data page asks the real server, with the adapter this session
taught (conftest's `askdata_adapter`), and shows what the API answers for the same question
(greedy decoding: the same answer twice): the sentence, the chart the server drew, the rows, the
SQL, the ECharts option; its feedback buttons write a teaching example. Without Chromium the
test is skipped, except under CI, which installs it (.ci/run)."""

import json
import os
import shutil
import urllib.request

import pytest

from conftest import import_askdata_adapter, import_models, start_server

QUESTION = "华北地区2019年3-5月的销售额,用折线图来表示"


def chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("CI runs the console test in Chromium: apt-get install chromium chromium-driver (.ci/run does)")
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,1600"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def js_str(v):
    """A JSON value as the page's String(v) writes it."""
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def api_ask(url, question):
    req = urllib.request.Request(url + "/api/askdata/ask", data=json.dumps({"question": question, "svg": True}).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def test_askdata_console_page_shows_the_api_answer_and_records_feedback(tmp_path, askdata_adapter):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    import_models(tmp_path, ["smollm2-135m-instruct", "all-minilm-l6-v2"])
    import_askdata_adapter(tmp_path, askdata_adapter)
    proc, url = start_server(tmp_path)
    driver = chromium()
    try:
        driver.get(url + "/console")
        assert driver.current_url.endswith("/console/askdata")
        assert "Ask-Data" in driver.title
        # The model list comes from /v1/models, chat models only.
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) > 1)
        options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#model option")]
        assert sorted(options) == ["", "askdata-smollm2", "smollm2-135m-instruct"], options

        # Once through the API first, so the page's request and the comparison's below both find
        # the prompt's prefix cached (the same computation, the same greedy answer).
        api_ask(url, QUESTION)
        driver.find_element(By.ID, "question").send_keys(QUESTION)
        driver.find_element(By.ID, "ask").click()
        WebDriverWait(driver, 300).until(EC.text_to_be_present_in_element((By.ID, "status"), "Answered in"))

        want = api_ask(url, QUESTION)
        # The taught model answers the showcase question: a line chart of three months.
        assert want.get("sql") and want["chart"]["type"] == "line" and len(want["rows"]) == 3 and want.get("svg"), want
        assert driver.find_element(By.ID, "answer").get_attribute("textContent") == want["answer"]
        assert driver.find_element(By.ID, "sql").get_attribute("textContent") == (want.get("sql") or "")
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#rows thead th")]
        assert headers == want["columns"]
        cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#rows tbody tr")]
        assert cells == [[js_str(v) for v in row] for row in want["rows"]]
        assert driver.find_elements(By.CSS_SELECTOR, "#chart svg polyline, #chart svg path"), "the server's line chart is not on the page"
        echarts = driver.find_element(By.ID, "echarts-option").get_attribute("textContent")
        assert (json.loads(echarts) if echarts else None) == want.get("echarts")
        assert driver.find_element(By.ID, "error").get_attribute("textContent") == (want.get("error") or "")

        # Feedback: "wrong" with a corrected query appends a checked teaching example.
        feedback = tmp_path / "askdata" / "feedback.jsonl"
        before = feedback.read_text(encoding="utf-8").count("\n") if feedback.exists() else 0
        driver.find_element(By.ID, "wrong").click()
        box = driver.find_element(By.ID, "corrected-sql")
        box.clear()
        box.send_keys("SELECT substr(order_date, 1, 7) AS month, ROUND(SUM(amount), 2) AS amount FROM sales WHERE region = '华北' AND order_date BETWEEN '2019-03-01' AND '2019-05-31' GROUP BY region, month ORDER BY month")
        driver.find_element(By.ID, "send-correction").click()
        WebDriverWait(driver, 60).until(EC.text_to_be_present_in_element((By.ID, "feedback-status"), "Saved"))
        lines = feedback.read_text(encoding="utf-8").splitlines()
        assert len(lines) == before + 1
        example = json.loads(lines[-1])
        assert example["messages"][-1]["role"] == "assistant" and "GROUP BY region, month" in example["messages"][-1]["content"]

        # A bad request shows the API's message, not a blank page.
        driver.execute_script("document.getElementById('question').value = 'x'.repeat(2001)")
        driver.find_element(By.ID, "ask").click()
        WebDriverWait(driver, 30).until(EC.text_to_be_present_in_element((By.ID, "status"), "2000 characters"))
        assert "error" in driver.find_element(By.ID, "status").get_attribute("class")
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)

"""Rule logs: one timestamped line per message or progress report, no library chatter."""

import logging
import re
import subprocess
import sys


def test_a_rule_log_has_progress_lines_and_no_third_party_info(tmp_path):
    log_file = tmp_path / "rule.log"
    script = f"""
import logging
from insight.core.logs import progress, setup_logging
log = setup_logging({str(log_file)!r})
logging.getLogger("open_clip").info("Loaded ViT-B-16 model config.")
logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
logging.getLogger("open_clip").warning("a real warning")
bar = progress(3, "features shard 00000", "img")
log.info("between updates")
for _ in range(3):
    bar.update(1)
bar.close()
log.info("done")
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    lines = log_file.read_text().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) [\w.]+: ")
    assert lines and all(stamp.match(line) for line in lines), lines
    text = "\n".join(lines)
    assert "\r" not in log_file.read_text()
    assert "Loaded ViT-B-16" not in text and "AVX512" not in text
    assert "a real warning" in text and "between updates" in text and "done" in text
    assert re.search(r"insight.progress: features shard 00000: 100%.*3/3", text)
    logging.shutdown()

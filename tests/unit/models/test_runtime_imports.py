import subprocess
import sys


def test_runtime_modules_do_not_pull_in_torch_or_training():
    code = ("import sys, appliance.models.package, appliance.triage.preprocess, appliance.drift.histograms; "
            "print(sorted(m for m in ('torch', 'training', 'scipy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"

"""report.md's text from the records a run keeps: the machine named once, the
pictures of what a model gets wrong linked beside its confusion matrix."""

from vggcifar.report import hardware, render

CPU = "Intel(R) Xeon(R) Processor, 2 cores"


def test_cpu_is_named_once_when_it_is_the_device():
    env = {"device": {"kind": "cpu", "name": CPU}, "cpu": CPU}
    assert hardware(env) == f"{CPU} (cpu)"
    text = render(title="t", milestones=[], environment=env, config={})
    line = next(line for line in text.splitlines() if line.startswith("- hardware:"))
    assert line.count("Xeon") == 1, line


def test_an_accelerator_is_named_with_the_cpu_beside_it():
    env = {"device": {"kind": "gpu", "name": "NVIDIA H100", "count": 2}, "cpu": CPU}
    assert hardware(env) == f"2 x NVIDIA H100 (gpu); CPU {CPU}"
    assert hardware({"device": {"kind": "gpu", "name": "NVIDIA H100", "count": 1}, "cpu": CPU}).startswith("NVIDIA")

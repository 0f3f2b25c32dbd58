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


def test_time_to_accuracy_is_one_sentence_under_the_time_of_learning():
    from vggcifar.report import milestone_section, time_to_text

    time_to = {"50%": {"epoch": 2, "train_seconds": 61.0}, "80%": {"epoch": 5, "train_seconds": 3725.0}, "90%": None}
    text = time_to_text(time_to, 15)
    assert text == ("Validation accuracy first reached 50% at epoch 2 (0:01:01 of learning), 80% at epoch 5 "
                    "(1:02:05 of learning); 90% not within 15 epochs.")
    assert time_to_text({"50%": None, "80%": None}, 1) == "Validation accuracy 50% or 80% not within 1 epoch."
    assert time_to_text(None, 15) is None
    metrics = {"epoch": 15, "test_accuracy": 0.9, "confusion_matrix": [[1, 0], [0, 1]], "class_names": ["a", "b"],
               "train_seconds": 10.0, "time_to": time_to}
    lines = milestone_section(metrics, {"confusion": "cm.png"}, {}).splitlines()
    assert lines[lines.index(text) - 2].startswith("Time of learning process")
    del metrics["time_to"]
    assert not any(line.startswith("Validation accuracy") for line in milestone_section(metrics, {"confusion": "c"}, {}).splitlines())

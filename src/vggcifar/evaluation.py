"""Evaluate a saved model, and what every evaluation writes: metrics.json, the confusion matrix as a table and as a picture, the pictures of what the model gets wrong."""

from __future__ import annotations

from pathlib import Path

from vggcifar.inference import load_model, predict_tta
from vggcifar.rundir import ResultDir, RunDir, model_file


def write_results(folder: ResultDir, metrics: dict, *, synthetic: bool, images) -> None:
    """metrics.json, confusion_matrix.csv and .png, and the pictures of what
    the model gets wrong (mistakes.png from ``images``, the test images as
    stored, which metrics' ``mistakes`` index; recall.png) for one evaluation."""
    from vggcifar.plots import confusion_figure, mistakes_figure, recall_figure, save_figure

    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_metrics(metrics)
    folder.write_confusion_csv(metrics["confusion_matrix"], metrics["class_names"])
    epoch = f"epochs = {metrics['epoch']}, " if metrics.get("epoch") is not None else ""
    title = f"{'synthetic data, ' if synthetic else ''}{epoch}accuracy = {100 * metrics['test_accuracy']:.2f}%"
    names = metrics["class_names"]
    save_figure(confusion_figure(metrics["confusion_matrix"], names, title=title), folder.confusion_png)
    save_figure(mistakes_figure(images, metrics["mistakes"], names,
                                title=f"most confident mistakes, {title}"), folder.mistakes_png)
    save_figure(recall_figure(metrics["per_class"]["recall"], names, title=f"recall per class, {title}"),
                folder.recall_png)


def measure(model, cifar, tta: str, where) -> dict:
    """The metrics of ``model`` (``where``, in messages) on the test set of
    ``cifar`` (a vggcifar.data.CifarData) with test-time augmentation ``tta``,
    and what they were measured on. Raises ValueError when the model's outputs
    are not the set's classes."""
    from vggcifar.metrics import summarize

    if model.output_shape[-1] != cifar.num_classes:
        raise ValueError(f"{where} has {model.output_shape[-1]} outputs but the dataset has "
                         f"{cifar.num_classes} classes; pass the matching --data or --dataset")
    probs = predict_tta(model, cifar.x_test, tta)
    return {**summarize(probs, cifar.y_test, cifar.class_names), "tta": tta, "synthetic": cifar.synthetic,
            "subset": cifar.subset, "skipped_files": cifar.skipped}


def evaluate_path(target, *, data=None, dataset=None, url=None, sha256=None, test_share=None, split_seed=None,
                  limit_test=None, out_dir=None, tta="none", precision="auto"):
    """Evaluate ``target`` (a run folder or a .keras file) on the test set
    named by ``data`` / ``dataset`` (a run folder: its own, unless given;
    ``url`` and ``sha256`` as for ``load_cifar``; ``test_share`` and
    ``split_seed`` as for ``vggcifar.data.read_path``), with test-time augmentation
    ``tta`` (see vggcifar.inference.TTA_MODES), the model computing in
    ``precision`` (vggcifar.inference.PRECISIONS); returns (metrics, output
    folder). The default folder is ``evaluation``, ``evaluation-flip`` with flip TTA."""
    from vggcifar.data import load_source

    source = {"data": data, "dataset": dataset, "url": url, "sha256": sha256, "test_share": test_share,
              "split_seed": split_seed}
    target = Path(target)
    epoch = None
    if target.is_dir():
        run = RunDir(target)
        model_path = model_file(target)
        if data is None and dataset is None:
            source = {**run.read_run().get("data", {}), **{k: v for k, v in source.items() if v is not None}}
        if limit_test is None:
            limit_test = run.read_config_values().get("limit_test")
        if run.has_metrics():
            epoch = run.read_metrics().get("epoch")
        out = ResultDir(out_dir) if out_dir else run.evaluation(tta)
    else:
        model_path = target
        suffix = "" if tta == "none" else f"-{tta}"
        out = ResultDir(out_dir or target.with_name(f"{target.stem}-evaluation{suffix}"))
    model = load_model(model_path, precision)  # a missing or unsafe file is refused before keras is imported
    from vggcifar.backend import resolve_precision

    cifar = load_source(source, limit_train=1, limit_test=limit_test)
    metrics = {"epoch": epoch, **measure(model, cifar, tta, model_path), "precision": resolve_precision(precision),
               "model": str(model_path)}
    write_results(out, metrics, synthetic=cifar.synthetic, images=cifar.x_test)
    return metrics, out.path

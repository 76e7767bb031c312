"""analysis/figures.py as a reader sees it: human point names, one colour / marker mapping in every figure,
a legend that leaves the plot its width, labelled axes with units, heat maps only where there is a map, figures
shown in notebooks, and ``illada-report --latency`` errors in one line."""

from __future__ import annotations

import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from analysis import figures  # noqa: E402
from analysis.figures import (block_marker, decoding_colour, frontier_plot, heatmap_plot,  # noqa: E402
                              point_labels)
from analysis.report import main as report_main  # noqa: E402
from analysis.synthetic import write_generation_sweep, write_scoring_sweep  # noqa: E402


def point(decoding, steps=None, block=8, threshold=None, cache="none", acc=0.8, ms=2.0, **extra) -> dict:
    return {"key": f"{decoding}{steps}{block}{threshold}{acc}{ms}", "task": "arithmetic", "model_name": "default",
            "metric": "exact_match", "method": "generate", "decoding": decoding, "sampler.steps": steps,
            "sampler.block_length": block, "sampler.threshold": threshold, "sampler.cache": cache,
            "accuracy": acc, "ci_low": acc - 0.05, "ci_high": min(1.0, acc + 0.05), "latency_p50_s": ms / 1e3,
            "nfe_per_sample": steps or 4, "tokens_per_forward": 8 / (steps or 4), **extra}


#: the main job's kind of sweep: a fixed steps x block grid and threshold decoding with and without the cache
FRONTIER = pd.DataFrame(
    [point("fixed", s, b, acc=0.6 + 0.04 * s / b * 2, ms=0.6 * s) for s in (2, 4, 8) for b in (2, 4, 8)
     if s % (8 // b) == 0]
    + [point(d, None, 8, t, c, acc=0.5 + 0.4 * t, ms=1.0 + t) for t in (0.5, 0.7, 0.9)
       for d, c in (("threshold", "none"), ("threshold+dual cache", "dual"))])


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


# ------------------------------------------------------------------------------------------------------ labels
def test_point_labels_are_short_and_human():
    labels = point_labels(FRONTIER)
    assert "fixed, 8 steps, block 4" in set(labels)
    assert "threshold 0.9 + dual cache" in set(labels) and "threshold 0.9" in set(labels)
    assert not labels.str.contains("=|sampler|_").any()
    # a setting that varies is named; one that does not, is not (every threshold point has block 8 here)
    varied = FRONTIER.assign(**{"sampler.remasking": ["random", "low_confidence"] * (len(FRONTIER) // 2)
                                + ["random"] * (len(FRONTIER) % 2)})
    assert point_labels(varied).str.endswith(("random remasking", "low confidence remasking", "cache")).all()
    scoring = pd.DataFrame([{"key": "a", "decoding": "confidence"}, {"key": "b", "decoding": "likelihood"}])
    assert list(point_labels(scoring)) == ["confidence", "likelihood"]


def test_cache_points_are_named_by_variant_and_main_knob():
    from analysis.load import _decoding

    settings = pd.DataFrame({"sampler.cache": ["dkv", "dkv", "dkv", "none"],
                             "sampler.dkv_variant": ["decode", "greedy", "greedy", None],
                             "sampler.cache_steps": [8, 2, 4, None]})
    assert list(_decoding(settings)) == ["fixed+dkv cache", "fixed+dkv greedy cache", "fixed+dkv greedy cache",
                                         "fixed"]
    df = pd.DataFrame([point(d, 8, 8, cache=c, **{"sampler.cache_steps": k}) for d, c, k in (
        ("fixed+dkv cache", "dkv", 8), ("fixed+dkv greedy cache", "dkv", 2), ("fixed+dkv greedy cache", "dkv", 4))])
    assert list(point_labels(df)) == ["fixed, 8 steps, block 8 + dKV-Cache (cache steps 8)",
                                      "fixed, 8 steps, block 8 + dKV-Cache-Greedy (cache steps 2)",
                                      "fixed, 8 steps, block 8 + dKV-Cache-Greedy (cache steps 4)"]


def test_every_cache_mode_has_its_own_shade_and_its_paper_name():
    from illada.sampling.settings import CACHES

    modes = [m for m in CACHES if m != "none"] + ["dkv greedy"]
    decodings = ["fixed"] + [f"fixed+{m} cache" for m in modes]
    assert len({decoding_colour(d) for d in decodings}) == len(decodings)
    assert figures.decoding_label("fixed+d2cache cache") == "fixed + d2Cache"
    assert figures.decoding_label("threshold+dllm cache") == "threshold + dLLM-Cache"
    assert decoding_colour("fixed + d2Cache") == decoding_colour("fixed+d2cache cache")  # a legend label too


def test_long_latencies_get_their_unit_and_ticks_that_do_not_run_together():
    """Multiple-choice points of 84-140 s: seconds on the axis, a few ticks that do not overlap."""
    df = pd.DataFrame([point(d, None, None, acc=a, ms=ms) for d, a, ms in (
        ("confidence", 0.5, 84_000), ("likelihood", 0.45, 110_000), ("likelihood", 0.55, 140_000))])
    fig = frontier_plot(df)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "latency per request, p50 (s)"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0]
              <= ax.get_xlim()[1]]
    assert 2 <= len(labels) <= 6 and all(float(t.get_text()) < 1000 for t in labels), [t.get_text() for t in labels]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    lo, hi = ax.get_xlim()
    assert lo < 84 and hi > 140  # the leftmost and rightmost points inside the axis
    plt.close(fig)
    minutes = frontier_plot(df.assign(latency_p50_s=df["latency_p50_s"] * 10))
    assert minutes.axes[0].get_xlabel() == "latency per request, p50 (min)"
    plt.close(minutes)


def test_a_front_of_one_point_is_drawn_as_a_line():
    fig = frontier_plot(pd.DataFrame([point("confidence", None, None, acc=0.5, ms=3.0)]))
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_color() == "black" and len(line.get_xdata()) >= 2]
    assert any(np.ptp(np.asarray(line.get_xdata(), dtype=float)) > 0 for line in lines)
    lo, hi = ax.get_xlim()
    assert lo < 3.0 < hi
    plt.close(fig)


def test_main_job_figure_names_its_front_in_words():
    fig = frontier_plot(FRONTIER, title="frontier: 15 points")
    shown = texts(fig)
    assert not [t for t in shown if "=" in t or "sampler." in t], shown
    assert "threshold 0.9 + dual cache" in shown
    ax = fig.axes[0]
    assert ax.get_ylabel() == "accuracy (exact match, %)" and ax.get_xlabel() == "latency per request, p50 (ms)"
    # plain numbers on the log axis: no 2x10^0 mathtext
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and all(re.fullmatch(r"[0-9.]+", t) for t in ticks), ticks
    assert 6.5 <= fig.get_figwidth() <= 7.5 and fig.get_figheight() <= 5
    plt.close(fig)


# --------------------------------------------------------------------------------------------------- encodings
def legend_entries(fig) -> dict[str, matplotlib.lines.Line2D]:
    legend = fig.legends[0]
    return {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}


def test_one_colour_and_marker_mapping_in_every_figure():
    small = FRONTIER[FRONTIER["sampler.block_length"].eq(8) | FRONTIER["decoding"].ne("fixed")]
    figs = [frontier_plot(FRONTIER), frontier_plot(FRONTIER, x="nfe_per_sample"),
            frontier_plot(small.assign(**{"sampler.block_length": [8, 4] * (len(small) // 2)
                                          + [8] * (len(small) % 2)}))]
    entries = [legend_entries(f) for f in figs]
    for e in entries:  # the decoding method is in the colour, the cache in its shade
        assert e["threshold + dual cache"].get_color() != e["threshold"].get_color() != e["fixed"].get_color()
        assert e["block 8"].get_marker() == block_marker(8) == "D" and e["block 4"].get_marker() == "^"
    assert len({tuple(matplotlib.colors.to_rgb(e["threshold"].get_color())) for e in entries}) == 1
    assert decoding_colour("threshold+dual cache") == decoding_colour("threshold + dual cache")
    assert block_marker(None) == block_marker(float("nan")) == "o" and block_marker(8.0) == "D"
    for f in figs:
        plt.close(f)


def test_legend_leaves_the_plot_its_width():
    fig = frontier_plot(FRONTIER)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    axes = fig.axes[0].get_window_extent(renderer)
    assert legend.y1 <= axes.y0  # below the plot, not beside it
    assert axes.width >= 0.75 * fig.bbox.width
    assert legend.width <= 1.1 * fig.bbox.width
    plt.close(fig)


def test_front_only_has_error_bars_and_dominated_points_are_faint(tmp_path):
    sweep = write_generation_sweep(tmp_path / "big", n_points=400, n_items=20, failures=0)
    from analysis import load_sweep
    pts = load_sweep(sweep, cache=False).points
    fig = frontier_plot(pts)
    for ax in fig.axes:
        if not ax.has_data():
            continue
        bars = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
        n_bars = sum(len(c.get_segments()) for c in bars)
        front = figures.pareto_mask(pts[(pts["task"] + " · " + pts["model_name"]).eq(ax.get_title())]
                                    if " · " in ax.get_title() else pts, by=["task", "model_name"]).sum()
        assert n_bars <= front * 3  # one bar (+ caps drawn as markers) per front point, none for the rest
        faint = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)
                 and c.get_alpha() is not None and c.get_alpha() < 0.5]
        assert faint
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- heat map
def test_heatmap_needs_two_by_two_cells():
    one_row = FRONTIER[FRONTIER["sampler.steps"].eq(8)]
    with pytest.raises(ValueError, match="at least 2 x 2 cells"):
        heatmap_plot(one_row)
    fig = heatmap_plot(FRONTIER)  # 3 x 3 steps x block length
    assert len(fig.axes) == 2 and "%" in fig.axes[1].get_ylabel()  # a panel and its colour bar
    # 2 steps in blocks of 2 of 8 tokens is invalid: its cell is marked and the mark explained
    assert texts(fig.axes[0]).count("×") == 1
    assert any(t.startswith("× no result: the setting is invalid") for t in texts(fig))
    plt.close(fig)


def test_heatmap_of_equal_cells_has_no_colour_bar():
    fig = heatmap_plot(FRONTIER.assign(accuracy=1.0))
    assert len(fig.axes) == 1  # no 90-110% colour bar around a single value
    assert "every cell" in fig._suptitle.get_text() and "100.0" in fig._suptitle.get_text()
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ report
def is_number(text: str) -> bool:
    try:
        float(text.replace("−", "-"))
        return True
    except ValueError:
        return False


def test_every_report_figure_labels_its_numeric_axes_with_units(tmp_path, monkeypatch):
    gen = write_generation_sweep(tmp_path / "gen", n_points=40, n_items=20, failures=0)
    score = write_scoring_sweep(tmp_path / "score", n_items=40)
    drawn = {}
    save = figures.save_figure

    def capture(fig, out_dir, name, **kw):
        fig.canvas.draw()
        for ax in fig.axes:
            for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
                ticks = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
                drawn.setdefault(name, []).append((label, bool(ticks) and all(map(is_number, ticks))))
        return save(fig, out_dir, name, **kw)

    monkeypatch.setattr(figures, "save_figure", capture)
    report_main([str(gen), str(score), "--out", str(tmp_path / "out")])
    assert {"pareto_latency", "pareto_nfe", "tokens_per_forward", "heatmap_accuracy", "scoring_ablation"} <= set(drawn)
    for name, axes in drawn.items():
        for label, numeric in axes:
            assert not re.search(r"[=_]", label), (name, label)
            if numeric:  # a numeric axis says what and in which unit; a categorical one is named by its ticks
                assert label, (name, axes)
            if "accuracy" in label:
                assert "%" in label, (name, label)
            if "latency" in label:
                assert "(ms)" in label, (name, label)


def test_report_latency_option_names_the_value_and_the_valid_columns(tmp_path, capsys):
    sweep = write_generation_sweep(tmp_path / "gen", n_points=4, n_items=10, failures=0)
    with pytest.raises(SystemExit) as exit_:
        report_main([str(sweep), "--latency", "latency", "--out", str(tmp_path / "out")])
    message = str(exit_.value.code)
    assert message.startswith("error: --latency 'latency'") and "\n" not in message
    assert "throughput_items_per_s" in message and "latency_p50_s" in message
    assert not (tmp_path / "out").exists()
    # the command: one line on stderr, no traceback, exit status 1
    command = str(figures.Path(sys.executable).parent / "illada-report")
    run = subprocess.run([command, str(sweep), "--latency", "latency"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip() == message and "Traceback" not in run.stderr


# --------------------------------------------------------------------------------------------------- notebooks
def test_paper_style_does_not_hide_later_figures_in_a_notebook(tmp_path):
    """IPython's inline backend is chosen when the first figure is drawn; inside plt.rc_context, leaving the
    context used to turn interactive mode off again, and no later figure was shown."""
    nb = nbformat.v4.new_notebook()
    draw = "with paper_style():\n    fig, ax = plt.subplots()\n    ax.plot([1, 2])"
    nb.cells = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfrom analysis import paper_style"),
                nbformat.v4.new_code_cell(draw), nbformat.v4.new_code_cell(draw),
                nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot([2, 1])")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(figures.Path(figures.__file__).parent.parent)}}).execute()
    shown = [sum(bool(o.get("data", {}).get("image/png")) for o in c.outputs) for c in nb.cells[1:]]
    assert shown == [1, 1, 1]


def test_single_panel_figure_size_and_numbers():
    fig = frontier_plot(FRONTIER)
    assert np.isclose(fig.get_figwidth(), 3.7 * 1.85, atol=0.3)
    plt.close(fig)


def test_decoding_strategies_are_named_by_decoder_not_by_their_threshold_knob():
    """hierarchy / klass / credit take a `threshold` knob too: the decoder, not Fast-dLLM's rule, names them."""
    import pandas as pd

    from analysis.load import _decoding
    from analysis.figures import point_labels

    df = pd.DataFrame({"sampler.decoder": ["llada", "eb_sampler", "klass", None],
                       "sampler.threshold": [0.9, None, 0.9, None], "sampler.gamma": [None, 0.001, None, None],
                       "sampler.kl_threshold": [None, None, 0.01, None], "sampler.steps": [8] * 4,
                       "sampler.block_length": [8] * 4, "sampler.cache": ["none", "dual", "none", "none"]})
    df["decoding"] = _decoding(df)
    assert df["decoding"].tolist() == ["threshold", "eb_sampler+dual cache", "klass", "fixed"]
    assert point_labels(df).tolist() == ["threshold 0.9", "eb sampler, gamma 0.001 + dual cache",
                                         "klass, kl threshold 0.01", "fixed, 8 steps, block 8"]

"""The ablation tables from files in the stages' own layouts, against hand computations."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insight.ablations.tables import ablation_tables, headline, headline_markdown, write_rows

INTERPRETABILITY = """method,dataset,locality,consistency,impurity,images,active_concepts,status
insight,partimagenet,{loc},0.3,0.4,64,800,
global_broadcast,partimagenet,0.06,0.13,0.72,64,900,
insight,coco_stuff,,,,,,not run
"""
OVS = """method,world,voc
clip_dinoiser,61.0,not run
insight,{miou},not run
"""
CLASSIFICATION = """method,dataset,top1,top5,nonzero_per_class,status
insight,objects,{top1},1.0,1700.0,
linear_probe_clip,objects,1.0,1.0,64.0,
all,imagenet,,,,not run
"""


def write_run(folder, fve, loc, miou, top1, planted, shuffled, scores):
    folder.mkdir()
    sae = {
        "settings": {"k": 12},
        "config": {"d_sae": 8, "group_sizes": [2, 6], "k": 12},
        "metrics": {
            "heldout": {
                "fve": fve,
                "l0_threshold": 11.5,
                "dead_latents": 3,
                "saebench": {"frac_alive": 0.6},
            }
        },
    }
    quality = {
        "edges": 40,
        "direct_edges": 25,
        "equivalent_pairs": 2,
        "dense_concepts": 1,
        "children_per_concept": {"max": 30, "median": 2.0},
        "direct_children_per_concept": {"max": 12, "median": 1.0},
        "replicating_share": 0.5,
    }
    world = {
        "families": {"planted_edges": planted, "planted_edges_shuffled_parents": shuffled},
        "naming": {
            "world_named": 15,
            "top_concepts": 20,
            "part_concepts_own_word": {"named": 30, "shuffled_names": 12.5},
            "part_concepts": 50,
        },
    }
    paths = {
        "sae": folder / "sae.json",
        "families": folder / "family_quality.json",
        "names": folder / "names.parquet",
        "interpretability": folder / "interpretability_table.csv",
        "ovs": folder / "ovs_table.csv",
        "classification": folder / "classification_table.csv",
        "world": folder / "world_recovery.json",
    }
    paths["sae"].write_text(json.dumps(sae))
    paths["families"].write_text(json.dumps(quality))
    paths["world"].write_text(json.dumps(world))
    names = pa.table({"concept": list(range(len(scores))), "score": scores})
    pq.write_table(names, paths["names"])
    paths["interpretability"].write_text(INTERPRETABILITY.format(loc=loc))
    paths["ovs"].write_text(OVS.format(miou=miou))
    paths["classification"].write_text(CLASSIFICATION.format(top1=top1))
    return {kind: str(path) for kind, path in paths.items()}


@pytest.fixture
def runs(tmp_path):
    return {
        "default": write_run(tmp_path / "a", 0.9, 0.4, 61.5, 0.95, 200, 100.0, [0.2, 0.3, 0.4]),
        "no_dinoiser": write_run(
            tmp_path / "b", 0.8, 0.1, 40.0, 0.9, 120, 80.0, [0.1, None, float("nan")]
        ),
    }


def test_every_row_is_marked_with_its_variant(runs, tmp_path):
    tables = ablation_tables(runs)
    assert set(tables) == {"sae", "interpretability", "ovs", "classification", "families", "naming"}
    assert [r["variant"] for r in tables["sae"]] == ["default", "no_dinoiser"]
    assert [r["variant"] for r in tables["interpretability"]] == ["default"] * 3 + [
        "no_dinoiser"
    ] * 3
    write_rows(tables["ovs"], tmp_path / "ovs.csv")
    with open(tmp_path / "ovs.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["variant", "method", "world", "voc"]


def test_the_headline_is_insights_row_of_each_task(runs):
    rows = headline(ablation_tables(runs))
    default, ablated = rows
    assert default["fve"] == 0.9 and ablated["fve"] == 0.8
    assert default["l0"] == 11.5 and default["dead_latents"] == 3
    # INSIGHT's measured rows only: coco_stuff was not run, global_broadcast is a baseline
    assert default["locality"] == pytest.approx(0.4) and ablated["locality"] == pytest.approx(0.1)
    assert default["ovs_miou"] == pytest.approx(61.5) and ablated["ovs_miou"] == pytest.approx(40.0)
    assert default["top1"] == pytest.approx(0.95)
    assert default["planted_ratio"] == pytest.approx(2.0) and ablated["planted_ratio"] == 1.5
    assert default["median_score"] == pytest.approx(0.3) and ablated["median_score"] == 0.1
    assert (ablated["concepts"], ablated["scored"]) == (3, 1)
    table = headline_markdown(rows).splitlines()
    assert table[0] == "| figure | default | no_dinoiser |"
    assert "| OVS mIoU | 61.5 | 40.0 |" in table
    assert "| planted / shuffled | 2.000 | 1.500 |" in table


def test_a_run_without_a_task_leaves_its_figure_out(runs):
    for paths in runs.values():
        del paths["ovs"], paths["world"]
    tables = ablation_tables(runs)
    assert "ovs" not in tables
    rows = headline(tables)
    assert rows[0]["ovs_miou"] is None and "planted_ratio" not in rows[0]
    table = headline_markdown(rows)
    assert "OVS mIoU" not in table and "planted" not in table

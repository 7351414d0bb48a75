"""One "path relative to the manifest" rule (issue 21.6): written manifests ('..' allowed) and the image ids of
predictions (an image outside the folder keeps its absolute path) come from relative_paths."""

from __future__ import annotations

from chestxr.data import relative_paths


def test_inside_outside_and_links(tmp_path):
    base = tmp_path / "m"
    (base / "img").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    inside, outside = str(base / "img" / "a.png"), str(tmp_path / "elsewhere" / "b.png")
    assert relative_paths([inside, outside, "rel/c.png"], base) == ["img/a.png", "../elsewhere/b.png", "rel/c.png"]
    assert relative_paths([inside, outside], base, outside="absolute") == ["img/a.png", outside]
    (base / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    via_link = str(base / "linked" / "b.png")
    assert relative_paths([via_link], base, outside="absolute") == ["linked/b.png"]  # named by the link

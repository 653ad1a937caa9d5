"""The router through app.py: one menu drawn with page links, and pages another change adds (the /Home address
of the legacy menu is tested in a real browser: tests/e2e/test_navigation.py)."""

from __future__ import annotations

from pathlib import Path

from pages._ui import menu
from tests.pages.conftest import assert_clean


def _menu_links(at) -> list[str]:
    return [link.proto.label for link in at.sidebar.get("page_link")]


def test_sidebar_menu_lists_every_page_once(app) -> None:
    at = app()
    assert_clean(at)
    assert _menu_links(at) == [entry.title for entry in menu.menu_entries()]
    assert _menu_links(at)[:5] == ["Home", "Model", "Compress", "Compare", "Layers"]
    assert "app" not in _menu_links(at)


def test_optional_page_is_listed_only_when_its_file_exists(monkeypatch, tmp_path: Path) -> None:
    extra = menu.MenuEntry("pages/9_Extra.py", "Extra", ":material/science:", optional=True)
    monkeypatch.setattr(menu, "MENU", (*menu.MENU, extra))
    (tmp_path / "pages").mkdir()
    for entry in menu.MENU:
        if not entry.optional:
            (tmp_path / entry.file).write_text("")
    monkeypatch.setattr(menu, "PROJECT_ROOT", tmp_path)
    assert "Extra" not in [e.title for e in menu.menu_entries()]
    (tmp_path / extra.file).write_text("")
    assert [e.title for e in menu.menu_entries()][-1] == "Extra"


def test_a_pages_first_run_freezes_what_lives_on(app) -> None:
    """pages/_ui/shell.settle_heap: after a page's first run the collector stops walking the libraries and the model
    (a full collection then takes milliseconds, not the ~0.2 s a rerun's messages used to wait for)."""
    import gc

    from pages._ui import shell

    at = app()  # app.py: the router, then the Home page through shell.run
    assert_clean(at)
    assert "Home" in shell.SETTLED_PAGES and gc.get_freeze_count() > 100_000
    frozen = gc.get_freeze_count()
    at.run()  # a rerun of a page already settled: no new freeze
    assert_clean(at)
    assert gc.get_freeze_count() == frozen

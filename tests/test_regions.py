"""Region codes as names (shared/regions.py) and the consoles' `region` filter."""

from __future__ import annotations

from jinja2 import Environment

from shared.console.web import region_filter
from shared.regions import known, region_name


def test_province_city_and_district_codes_have_their_names() -> None:
    """2, 4 and 6 digits name the province, the city, and the district with its city (西湖区 is in two cities)."""
    assert region_name("33") == "浙江省"
    assert region_name("3301") == "杭州市"
    assert region_name("330106") == "杭州市西湖区"
    assert region_name("360102") != region_name("330106")  # Nanchang's 东湖区, not Hangzhou's
    assert region_name("110105") == "北京市朝阳区"  # a municipality names itself once


def test_codes_padded_with_zeros_are_the_city_or_province() -> None:
    """A 6-digit code of a whole city or province (330100, 330000) reads as that city or province."""
    assert region_name("330100") == "杭州市"
    assert region_name("330000") == "浙江省"


def test_recent_divisions_are_known() -> None:
    """The data set has the 2021 districts (临平区, 钱塘区), so a current code never shows bare."""
    assert region_name("330113") == "杭州市临平区"
    assert region_name("330114") == "杭州市钱塘区"


def test_english_is_pinyin_with_the_kind_in_words() -> None:
    """English readers get pinyin (read as a whole name: 朝阳区 is Chaoyang) and District/County in English."""
    assert region_name("33", "en") == "Zhejiang"
    assert region_name("3301", "en") == "Hangzhou"
    assert region_name("330106", "en") == "Xihu District, Hangzhou"
    assert region_name("110105", "en") == "Chaoyang District, Beijing"
    assert region_name("45", "en") == "Guangxi"


def test_unknown_codes_are_shown_as_they_are() -> None:
    """A code the data set does not know (a typo, a future division) is shown as the code, not hidden or guessed."""
    assert region_name("999999") == "999999"
    assert region_name("98", "en") == "98"
    assert not known("999999")
    assert known("330106")


def test_the_filter_shows_the_name_with_the_code_on_hover() -> None:
    """`{{ code | region }}` renders the name in the page's language inside a span whose title is the code."""
    env = Environment(autoescape=True)
    env.filters["region"] = region_filter
    template = env.from_string("{{ code | region }}")
    t = {"unit.all": "全国"}.get
    assert template.render(code="330106", lang="zh", t=t) == '<span class="region" title="330106">杭州市西湖区</span>'
    assert 'title="3301">Hangzhou<' in template.render(code="3301", lang="en", t=t)
    assert template.render(code="", lang="zh", t=t) == "<span>全国</span>"
    assert template.render(code='<b>"', lang="zh", t=t) == '<span class="region" title="&lt;b&gt;&#34;">&lt;b&gt;&#34;</span>'

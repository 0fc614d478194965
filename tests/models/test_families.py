"""Model families are objects: a third family, written here in one class and registered, works
through params, explanations, prompts, export and the index config without any edit to the
package; and no family-name string switch is left in ``ragim/``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

import ragim
from ragim.errors import ValidationError
from ragim.explain import explain_params
from ragim.export import coefficients_frame, to_sklearn_pipeline
from ragim.index import IndexConfig
from ragim.lm import build_tiny_tokenizer
from ragim.lm.prompts import build_prompt, schema_lines
from ragim.models import (
    FAMILIES,
    MODEL_FAMILIES,
    GAMFamily,
    InterpretableModel,
    LogisticFamily,
    LogisticModel,
    ModelFamily,
    family_of,
    fit_frame,
    fit_metadata,
    fitted_schema,
    model_from_params,
    register_model_family,
    set_fitted,
)
from ragim.params import ModelParams, design_matrix, param_names
from ragim.schema import FeatureSchema

KIND = "raw-linear"


class RawLinearFamily(ModelFamily):
    """A toy family: one log-odds coefficient per raw (unstandardised) numeric feature."""

    name = KIND
    title = "raw-scale logistic regression"

    def param_names(self, schema):
        return ["intercept", *schema.names]

    def design_matrix(self, schema, X):
        return X[schema.names].to_numpy(dtype=float)

    def schema_lines(self, schema):
        return [f"- {f.name} (raw {f.unit})" for f in schema.features]


class RawLinearModel(InterpretableModel, ClassifierMixin, BaseEstimator):
    def __init__(self, schema=None):
        self.schema = schema

    def fit(self, X, y):
        Xdf, named, y, classes = fit_frame(self, X, y)
        schema = fitted_schema(self, Xdf)
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(Xdf[schema.names].to_numpy(float), y)
        vector = np.concatenate([lr.intercept_, lr.coef_[0]])
        params = ModelParams(KIND, schema, vector, metadata=fit_metadata(self, y, classes))
        set_fitted(self, params, classes, named=named, X=Xdf)
        return self


@pytest.fixture
def family():
    fam = RawLinearFamily()
    register_model_family(KIND, RawLinearModel, family=fam)
    yield fam
    FAMILIES.pop(KIND)
    MODEL_FAMILIES.pop(KIND)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 200), "bp": rng.normal(130, 15, 200)})
    schema = FeatureSchema.infer(X, units={"age": "years", "bp": "mmHg"}).fit(X)
    return X, schema


def test_builtin_families_are_registered_with_their_estimators():
    assert list(FAMILIES)[:2] == ["logistic", "gam"]
    assert isinstance(family_of("logistic"), LogisticFamily)
    assert isinstance(family_of("gam"), GAMFamily)
    assert family_of("logistic").model_cls is LogisticModel
    assert MODEL_FAMILIES["gam"] is family_of("gam").model_cls
    with pytest.raises(ValidationError, match="unknown model kind 'tree'; use one of"):
        family_of("tree")


def test_a_family_must_implement_layout_and_design():
    class Incomplete(ModelFamily):
        name = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def test_register_refuses_a_family_of_another_name(family):
    with pytest.raises(ValidationError, match="must be a ModelFamily named 'other'"):
        register_model_family("other", RawLinearModel, family=family)
    assert "other" not in MODEL_FAMILIES


def test_params_dispatch_to_the_new_family(family, data):
    X, schema = data
    p = ModelParams.from_dict(KIND, schema, {"intercept": -8.0, "age": 0.05, "bp": 0.03})
    assert p.names == param_names(KIND, schema) == ["intercept", "age", "bp"]
    assert np.array_equal(design_matrix(KIND, schema, X), X.to_numpy(float))
    expected = -8.0 + 0.05 * X["age"].to_numpy() + 0.03 * X["bp"].to_numpy()
    assert np.allclose(p.log_odds(X), expected)
    assert ModelParams.from_json(p.to_json()) == p
    with pytest.raises(ValidationError, match=f"only defined for GAM parameters, not {KIND}"):
        p.feature_terms("age")


def test_the_family_fits_and_rebuilds_its_own_model(family, data):
    X, schema = data
    y = (X["age"] + X["bp"] / 2 > 125).astype(int)
    model = RawLinearModel().fit(X, y)
    p = model.to_params()
    assert p.kind == KIND
    rebuilt = model_from_params(p)
    assert type(rebuilt) is RawLinearModel
    assert np.allclose(rebuilt.predict_proba(X)[:, 1], expit(p.log_odds(X)))
    assert family.estimator(schema).schema is schema


def test_explanations_use_the_family_defaults(family, data):
    X, schema = data
    p = ModelParams.from_dict(
        KIND,
        schema,
        {"intercept": -8.0, "age": 0.05, "bp": -0.03},
        std={"intercept": 0.5, "age": 0.01, "bp": 0.02},
    )
    ex = explain_params(p)
    assert ex.family is family
    frame = ex.to_frame()
    assert frame["term"].tolist() == ["age", "bp"]
    assert frame["coef"].tolist() == [0.05, -0.03]
    assert frame["ci_low"].tolist() == pytest.approx(
        [0.05 - 1.96 * 0.01, -0.03 - 1.96 * 0.02], abs=1e-4
    )
    assert ex.table()["term"].tolist() == ["age", "bp"]  # largest |coef| first
    assert ex.table(1).attrs["note"] == "1 of 2 terms shown (largest first)"
    assert ex.importance().set_index("feature")["importance"].to_dict() == {"age": 0.05, "bp": 0.03}
    assert f"GlobalExplanation({KIND} model" in repr(ex)
    assert ex.reference_intercept() == (-8.0, 0.5, [])
    assert len(ex.plot().axes) == 1
    rows, cols = family.text_table(ex.table())  # the command line's table
    assert rows[0] == ("age", "age", "+0.050", "1.05")
    assert cols[:2] == ["feature", "term"]

    row = X.iloc[[3]]
    loc = explain_params(p, row)
    c = loc.to_frame().set_index("feature")["contribution"]
    assert c["age"] == pytest.approx(0.05 * row["age"].iloc[0])
    assert c["bp"] == pytest.approx(-0.03 * row["bp"].iloc[0])
    assert loc.logit == pytest.approx(float(p.log_odds(row)[0]))
    assert loc.to_frame(by="term")["term"].tolist() == ["age", "bp"]


def test_prompt_export_and_index_config_use_the_family(family, data):
    X, schema = data
    assert schema_lines(schema, KIND) == ["- age (raw years)", "- bp (raw mmHg)"]
    _, text, _ = build_prompt("Predict stroke.", [], schema, KIND, build_tiny_tokenizer())
    assert "Model: raw-scale logistic regression." in text
    assert "- bp (raw mmHg)" in text

    p = ModelParams.from_dict(KIND, schema, {"intercept": -8.0, "age": 0.05, "bp": 0.03})
    out = coefficients_frame(p)
    assert out["term"].tolist() == ["intercept", "age", "bp"]
    assert out["coef"].tolist() == [-8.0, 0.05, 0.03]
    with pytest.raises(ValidationError, match=f"'{KIND}' parameters do not"):
        to_sklearn_pipeline(p)

    assert IndexConfig(model=KIND).model == KIND
    with pytest.raises(ValidationError, match=f"model must be 'logistic', 'gam' or '{KIND}'"):
        IndexConfig(model="tree")


# ---------------------------------------------------------------------- no string switches
SWITCH = re.compile(
    r"""(?:==|!=)\s*["'](?:logistic|gam)["']"""
    r"""|["'](?:logistic|gam)["']\s*(?:==|!=)"""
    r"""|\bin\s*[(\[{]\s*["'](?:logistic|gam)["']\s*,"""
)
#: where a family's own name may appear in code: the family modules and the registry
FAMILY_MODULES = {
    "models/family.py",
    "models/logistic_family.py",
    "models/gam_family.py",
    "models/base.py",
}


def test_the_switch_pattern_finds_switches():
    assert SWITCH.search('if kind == "logistic":')
    assert SWITCH.search("x = 'gam' != kind")
    assert SWITCH.search('if self.model not in ("logistic", "gam"):')
    assert not SWITCH.search('ModelParams.from_dict("logistic", schema, values)')


def test_no_family_name_switch_outside_the_family_modules():
    root = Path(ragim.__file__).resolve().parent
    found = [
        f"{path.relative_to(root).as_posix()}:{i}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.relative_to(root).as_posix() not in FAMILY_MODULES
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SWITCH.search(line)
    ]
    assert found == []


def test_registration_refuses_what_would_give_wrong_answers_later(data):
    """Found by an outside user writing a probit family: each of these used to register and
    fail (or mislead) only later."""

    class Probit(RawLinearFamily):
        name = "probit"

        def log_odds(self, params, X):  # another link: every generator would misread it
            return super().log_odds(params, X) * 1.7

    with pytest.raises(
        ValidationError, match=r"Probit.log_odds differs from intercept \+ design_matrix @ terms"
    ):
        ragim.models.register_family(Probit())

    class NoIntercept(RawLinearFamily):
        name = "no-intercept"

        def param_names(self, schema):
            return [*schema.names, "intercept"]

    class Narrow(RawLinearFamily):
        name = "narrow"

        def design_matrix(self, schema, X):
            return super().design_matrix(schema, X)[:, :1]

    with pytest.raises(
        ValidationError,
        match=r"NoIntercept.param_names must start with 'intercept', got \['a', 'b', 'intercept'\]",
    ):
        ragim.models.register_family(NoIntercept())
    with pytest.raises(
        ValidationError,
        match=r"Narrow.design_matrix gave shape \(24, 1\) for 24 rows and 2 non-intercept",
    ):
        ragim.models.register_family(Narrow())
    with pytest.raises(
        ValidationError, match="needs the estimator class, got an instance of RawLinearModel"
    ):
        register_model_family(KIND, RawLinearModel())
    with pytest.raises(ValidationError, match="overwrite must be True or False, got 'no'"):
        register_model_family("logistic", LogisticModel, overwrite="no")
    with pytest.raises(
        ValidationError,
        match="RawLinearModel writes 'raw-linear' parameters; it cannot "
        "be registered as model family 'other-name'",
    ):
        register_model_family("other-name", RawLinearModel)
    assert not {"probit", "no-intercept", "narrow", KIND, "other-name"} & (
        set(FAMILIES) | set(MODEL_FAMILIES)
    )


def test_a_family_registered_for_a_decorator_is_known_at_once_and_names_its_missing_class():
    from ragim.models.base import get_model_family

    class Late(RawLinearFamily):
        name = "late"

    decorate = register_model_family("late", family=Late())
    try:
        assert isinstance(family_of("late"), Late)
        with pytest.raises(
            ValidationError, match="model family 'late' has no estimator class; register one"
        ):
            get_model_family("late")

        class LateModel(RawLinearModel):
            _kind = ""

        assert decorate(LateModel) is LateModel and LateModel._kind == "late"
        assert get_model_family("late") is LateModel and family_of("late").model_cls is LateModel
    finally:
        FAMILIES.pop("late", None)
        MODEL_FAMILIES.pop("late", None)


def install_plugin_family(monkeypatch, tmp_path, kind: str) -> None:
    """Declare a RawLinearFamily named ``kind`` under the ``ragim.model_families`` entry-point
    group, as an installed package would (its module is imported only when the group is
    loaded), and forget that the group was loaded."""
    import importlib.metadata

    from ragim.models import family as family_module

    module = "plugin_" + kind.replace("-", "_")
    (tmp_path / f"{module}.py").write_text(
        "from ragim.models import register_family\n"
        "from tests.models.test_families import RawLinearFamily\n"
        f"class PluginFamily(RawLinearFamily):\n    name = {kind!r}\n"
        "register_family(PluginFamily())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint("plugin", module, family_module.PLUGIN_GROUP)
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group=None: [ep] if group == family_module.PLUGIN_GROUP else [],
    )
    monkeypatch.setattr(family_module, "_plugins_loaded", False)


def test_families_declared_by_installed_packages_load_on_first_use(monkeypatch, tmp_path):
    """A package's ``ragim.model_families`` entry point is imported when its kind is first
    asked for, so saved parameters of that family load in a fresh process (the CLI too)."""
    install_plugin_family(monkeypatch, tmp_path, "plugin-kind")
    try:
        assert family_of("plugin-kind").name == "plugin-kind"
        with pytest.raises(
            ValidationError, match="import the module that calls register_model_family"
        ):
            family_of("still-unknown")
    finally:
        FAMILIES.pop("plugin-kind", None)


def test_an_index_knows_a_family_an_installed_package_declares(monkeypatch, tmp_path):
    """IndexConfig looked the model up in the registry as it stood, so an index of a family
    declared under the entry-point group failed to build or load ("model must be 'logistic' or
    'gam'") unless something else had loaded the plugins first."""
    install_plugin_family(monkeypatch, tmp_path, "plugin-index-kind")
    try:
        assert IndexConfig(model="plugin-index-kind").model == "plugin-index-kind"
        with pytest.raises(ValidationError, match="got 'tree' .*entry-point group"):
            IndexConfig(model="tree")
    finally:
        FAMILIES.pop("plugin-index-kind", None)


class WithProductTerm:
    """A family mixin: one more term, the product of the first two design columns (age*bp), a
    term of no single feature (its ``term_features`` entry is "")."""

    def param_names(self, schema):
        return [*super().param_names(schema), "age*bp"]

    def design_matrix(self, schema, X):
        D = super().design_matrix(schema, X)
        return np.column_stack([D, D[:, 0] * D[:, 1]])


class ProductFamily(WithProductTerm, RawLinearFamily):
    name = "raw-product"

    def term_features(self, schema):
        return [*schema.names, ""]


class DroppingFamily(ProductFamily):
    name = "raw-dropping"

    def local_contributions(self, params, X):
        contributions, terms = super().local_contributions(params, X)
        contributions.pop("age*bp")
        return contributions, terms


def test_a_term_of_no_feature_is_its_own_row_of_a_patients_explanation(data):
    """The default local_contributions failed with KeyError '' on a term of no feature (which
    term_features documents); explanations now show it as its own row, so the contributions
    add up to the model's log-odds, and a family whose contributions do not is refused."""
    X, schema = data
    for fam in (ProductFamily(), DroppingFamily()):
        register_model_family(fam.name, family=fam)
    try:
        p = ModelParams("raw-product", schema, np.array([-1.0, 0.01, 0.002, 1e-4]))
        expl = explain_params(p, X.iloc[[0]])
        frame = expl.to_frame()
        assert frame["feature"].tolist() == ["age", "bp", "age*bp"]
        row = X.iloc[0]
        assert frame["contribution"].iloc[2] == pytest.approx(1e-4 * row["age"] * row["bp"])
        assert expl.logit == pytest.approx(float(p.log_odds(X.iloc[[0]])[0]))
        dropped = ModelParams("raw-dropping", schema, p.vector)
        with pytest.raises(ValidationError, match="raw-dropping family's contributions .* add up"):
            explain_params(dropped, X.iloc[[0]])
    finally:
        for name in ("raw-product", "raw-dropping"):
            FAMILIES.pop(name, None)
            MODEL_FAMILIES.pop(name, None)


def test_a_family_estimator_needs_no_private_name_to_fit_many_tasks(family):
    """A family's estimator written with the public helpers (fit_frame, fitted_schema,
    fit_metadata, set_fitted) and no scikit-learn ``_parameter_constraints`` fits many tasks:
    fit_many's parameter check failed with AttributeError '_parameter_constraints'."""
    assert "_parameter_constraints" not in RawLinearModel.__dict__
    assert RawLinearModel._kind == KIND  # set by register_model_family
    RawLinearModel().check_params()  # nothing to check, nothing raised
    tasks = ragim.datasets.synthetic_family(n_tasks=3, n_features=2, seed=0)
    fitted = ragim.models.fit_many(tasks, model=KIND, progress=False, cv=0)
    assert set(fitted.status.values()) == {"ok"}
    assert all(p.kind == KIND and p.metadata["source"] == "fit" for p in fitted.params.values())


class LogisticProductFamily(WithProductTerm, LogisticFamily):
    """The logistic family plus one interaction term, shown as its own explanation row."""

    name = "logistic-product"

    def term_features(self, schema):
        return [*super().term_features(schema), ""]

    def explanation_frame(self, params):
        main = ModelParams("logistic", params.schema, params.vector[:-1])
        base = LogisticFamily().explanation_frame(main)
        row = {c: np.nan for c in base.columns} | {"term": "age*bp", "feature": "", "coef": params.vector[-1]}
        return pd.concat([base, pd.DataFrame([row])], ignore_index=True)


def test_the_coefficients_csv_keeps_centres_and_fills_beside_a_familys_extra_terms(data):
    """The export added ``center``/``fill`` only when the frame had one row per design column,
    so a family with one more term silently lost the columns needed to re-score a patient;
    they are matched by term now (NaN on the family's own terms)."""
    X, schema = data
    register_model_family("logistic-product", family=LogisticProductFamily())
    try:
        p = ModelParams("logistic-product", schema, np.array([-1.0, 0.3, 0.2, 0.1]))
        out = coefficients_frame(p).set_index("term")
        assert out.loc["age", "center"] == pytest.approx(X["age"].mean())
        assert out.loc["bp", "fill"] == pytest.approx(X["bp"].median())
        assert np.isnan(out.loc["age*bp", "center"]) and np.isnan(out.loc["age*bp", "fill"])
    finally:
        FAMILIES.pop("logistic-product", None)
        MODEL_FAMILIES.pop("logistic-product", None)


def test_a_familys_term_that_never_varied_is_marked_not_estimable(family):
    """Only the built-in fits recorded the terms that never varied, so another family showed a
    number for an effect the data could not give (sex coef 0.0, odds ratio 1.0 on a women-only
    task); set_fitted given the fitted rows records them for any family."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"age": rng.normal(60, 10, 80), "sex": np.zeros(80)})
    y = (rng.random(80) < expit((X["age"] - 60) / 10)).astype(int)
    model = RawLinearModel().fit(X, y)
    assert model.params_.metadata["constant_terms"] == {"sex": 0.0}
    frame = explain_params(model.to_params()).to_frame().set_index("term")
    assert np.isnan(frame.loc["sex", "coef"]) and "never varies" in frame.loc["sex", "not_estimable"]
    assert frame.loc["age", "not_estimable"] == "" and np.isfinite(frame.loc["age", "coef"])


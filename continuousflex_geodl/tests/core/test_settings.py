"""One source of defaults: ``core.settings`` against the command line, the
Scipion forms, the core functions and the constants.

Every option of every ``continuousflex-geodl`` command and every parameter of
every Scipion protocol form either comes from a setting (same default, same
choices, in the same order) or is listed here as not being one; a default
typed anywhere else fails.  The comparison functions return the differences
as text, and the last tests check that they do report a planted mismatch.
"""
import argparse
import inspect
import json
import os
import subprocess
import sys

import pytest

from continuousflex_geodl.core import settings as S
from continuousflex_geodl.core.cli import build_parser

M, T, R, I, RT = (S.ModelSettings, S.TrainSettings, S.ReferenceSettings, S.InferSettings,
                  S.RuntimeSettings)
SIM, L, P, D = S.SimulateSettings, S.LandscapeSettings, S.PathSettings, S.DiagnosticsSettings


def _plain(v):
    if isinstance(v, S.Choice):
        return v.value
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


def _same(a, b):
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a == b and type(a) is type(b))
    return a == b


# ------------------------------------------------------------- command line --
#: options that are not settings (inputs, outputs, switches): (command, dest)
#: -> their default.  Anything else with a default must come from a setting.
CLI_NOT_SETTINGS = {
    ('demo', 'out'): 'demo_output',
}
#: settings whose option also takes values outside the choice list
OPEN_CHOICES = {(L, 'n_states'), (L, 'bandwidth')}


def _commands(parser, prefix=()):
    """(command words, parser) of every leaf sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, prefix + (name,))


def compare_cli(parser):
    """Differences between the options of ``parser`` (the CLI) and the settings."""
    problems = []
    for words, p in _commands(parser):
        cmd = ' '.join(words)
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            flag = '/'.join(a.option_strings) or a.dest
            setting = getattr(a, 'setting', None)
            if setting is None:
                key = (cmd, a.dest)
                if key in CLI_NOT_SETTINGS:
                    if a.default != CLI_NOT_SETTINGS[key]:
                        problems.append('%s %s: default %r, listed as %r'
                                        % (cmd, flag, a.default, CLI_NOT_SETTINGS[key]))
                elif a.default not in (None, False, argparse.SUPPRESS) or a.choices:
                    problems.append('%s %s: default %r / choices %r typed in the command, not '
                                    'taken from core.settings' % (cmd, flag, a.default,
                                                                  a.choices))
                continue
            group, name = setting
            want = group.default(name)
            if not _same(a.default, want):
                problems.append('%s %s: default %r, %s.%s is %r'
                                % (cmd, flag, a.default, group.__name__, name, want))
            choices = group.choices(name)
            if choices is not None and (group, name) not in OPEN_CHOICES:
                if a.choices is None or [_plain(c) for c in a.choices] != choices.values():
                    problems.append('%s %s: choices %r, %s.%s has %r'
                                    % (cmd, flag, a.choices, group.__name__, name,
                                       choices.values()))
            elif a.choices is not None and choices is None:
                # a restricted range (e.g. simulate --nma-modes 1 or 2) must hold the default
                if want is not None and want not in a.choices:
                    problems.append('%s %s: default %r not among its choices %r'
                                    % (cmd, flag, want, a.choices))
    return problems


def _cli_settings(parser):
    return {(' '.join(w), a.setting[0].__name__, a.setting[1])
            for w, p in _commands(parser) for a in p._actions if hasattr(a, 'setting')}


def test_every_cli_default_and_choice_list_comes_from_the_settings():
    parser = build_parser()
    assert compare_cli(parser) == []
    used = _cli_settings(parser)
    # the shared defaults this issue is about are really wired through
    for item in [('train', 'TrainSettings', 'beta'), ('train', 'ModelSettings', 'prior'),
                 ('train', 'ModelSettings', 'encoder_inputs'),
                 ('infer', 'InferSettings', 'refine_lr'),
                 ('simulate', 'SimulateSettings', 'motion'),
                 ('landscape analyze', 'LandscapeSettings', 'embedding'),
                 ('landscape path', 'PathSettings', 'kind'),
                 ('explore', 'ExploreSettings', 'path_kind'),
                 ('explore', 'PathSettings', 'n_points'),
                 ('landscape path', 'LandscapeSettings', 'units')]:
        assert item in used, item


def test_unified_defaults():
    """The values that used to disagree (form 0.125 vs CLI 1.0; refine_latents
    0.05 vs infer 0.1): the values every benchmark was measured with."""
    args = build_parser().parse_args(['train', '--particles', 'p.star', '--reference', 'r.pdb',
                                      '--out', 'm'])
    assert args.beta == T.beta == 1.0
    args = build_parser().parse_args(['infer', '--model', 'm', '--particles', 'p.star',
                                      '--out', 'z.npy'])
    assert args.refine_lr == I.refine_lr == 0.1
    from continuousflex_geodl.core.inference import refine_latents
    assert inspect.signature(refine_latents).parameters['lr'].default == 0.1


def test_cli_help_shows_the_settings_help_and_default():
    p = dict(_commands(build_parser()))[('train',)]
    beta = [a for a in p._actions if '--beta' in a.option_strings][0]
    assert beta.help.startswith(T.help('beta', default=False))
    assert '(default 1)' in beta.help


# ---------------------------------------------------------------- core code --
def _core_functions():
    from continuousflex_geodl.core import inference, simulate
    from continuousflex_geodl.core.landscape import (density, diagnostics, embedding, paths,
                                                     pipeline)
    from continuousflex_geodl.core.landscape import compare
    from continuousflex_geodl.core.landscape.explore import Explorer
    from continuousflex_geodl.core.models.reference import build_reference
    from continuousflex_geodl.core.poses import refine_poses, search_poses
    from continuousflex_geodl.core.poses.joint import repair_poses
    Po = S.PoseSettings
    return [
        (search_poses, dict(
            coarse_step=(Po, 'angular_step'), final_step=(Po, 'final_step'),
            n_candidates=(Po, 'candidates'), max_shift=(Po, 'max_shift'),
            resolution=(Po, 'resolution'), coarse_resolution=(Po, 'coarse_resolution'),
            batch_size=(Po, 'batch_size'), device=(RT, 'device'))),
        (refine_poses, dict(
            start_step=(Po, 'local_step'), final_step=(Po, 'final_step'),
            max_shift=(Po, 'max_shift'), resolution=(Po, 'resolution'),
            batch_size=(Po, 'batch_size'), device=(RT, 'device'))),
        (repair_poses, dict(
            start_step=(Po, 'local_step'), final_step=(Po, 'final_step'),
            max_shift=(Po, 'max_shift'), resolution=(Po, 'resolution'),
            batch_size=(Po, 'batch_size'), rounds=(Po, 'rounds'),
            refine_steps=(I, 'refine_steps'), device=(RT, 'device'))),
        (simulate.simulate_dataset, dict(
            n_particles=(SIM, 'n_particles'), box=(SIM, 'box'), apix=(SIM, 'apix'),
            snr=(SIM, 'snr'), motion=(SIM, 'motion'), population=(SIM, 'population'),
            seed=(SIM, 'seed'), sigma=(SIM, 'sigma'), end_rmsd=(SIM, 'end_rmsd'),
            n_modes=(SIM, 'nma_modes'), max_shift=(SIM, 'max_shift'),
            population_weights=(SIM, 'weights'), n_states=(SIM, 'n_states'),
            keep_clean=(SIM, 'keep_clean'), chunk_size=(SIM, 'chunk_size'),
            device=(RT, 'device'))),
        (pipeline.analyze, dict(
            embedding=(L, 'embedding'), n_states=(L, 'n_states'), method=(L, 'method'),
            barrier=(L, 'barrier'), min_population=(L, 'min_population'),
            max_states=(L, 'max_states'), knn=(L, 'knn'), max_fit=(L, 'max_fit'),
            n_boot=(L, 'bootstrap'), fe_boot=(L, 'fe_bootstrap'), bins=(L, 'bins'),
            bandwidth=(L, 'bandwidth'), units=(L, 'units'), temperature=(L, 'temperature'),
            seed=(L, 'seed'), latent_boot=(L, 'latent_bootstrap'),
            smooth=(L, 'density_smoothing'), kernel=(L, 'kernel'))),
        (pipeline.compute_path, dict(
            kind=(P, 'kind'), n_points=(P, 'n_points'), pc=(P, 'pc'),
            percentiles=(P, 'percentiles'), knn=(P, 'knn'), alpha=(P, 'alpha'),
            max_nodes=(P, 'max_nodes'), K=(P, 'K'), omega=(P, 'omega'), M=(P, 'M'),
            seed=(L, 'seed'), units=(L, 'units'), temperature=(L, 'temperature'))),
        (paths.pca_path, dict(percentiles=(P, 'percentiles'))),
        (Explorer, dict(path_points=(P, 'n_points'),
                        path_kind=(S.ExploreSettings, 'path_kind'),
                        inverse=(S.ExploreSettings, 'inverse'))),
        (paths.density_path, dict(knn=(P, 'knn'), max_nodes=(P, 'max_nodes'),
                                  alpha=(P, 'alpha'))),
        (paths.ridgeline_path, dict(K=(P, 'K'), omega=(P, 'omega'), M=(P, 'M'))),
        (density.energy_scale, dict(units=(L, 'units'), temperature=(L, 'temperature'))),
        (embedding.fit_embedding, dict(method=(L, 'embedding'), max_fit=(L, 'max_fit'))),
        (compare.latent_agreement, dict(k=(D, 'k'))),
        (diagnostics.isometry_correlation, dict(k=(D, 'isometry_k'),
                                                n_anchors=(D, 'n_anchors'))),
        (compare.landscape_agreement, dict(k=(D, 'k'))),
        (inference.infer_latents, dict(batch_size=(I, 'batch_size'))),
        (inference.refine_latents, dict(
            steps=(I, 'refine_steps'), lr=(I, 'refine_lr'),
            batch_size=(I, 'refine_batch_size'), mask_radius=(T, 'mask_radius'),
            prior_weight=(I, 'prior_weight'))),
        (build_reference, dict(n_atoms=(R, 'n_atoms'), apix=(R, 'apix'), sigma=(R, 'sigma'),
                               threshold=(R, 'threshold'), seed=(R, 'seed'))),
    ]


def compare_signature(func, mapping):
    """Differences between the keyword defaults of ``func`` and the settings."""
    params = inspect.signature(func).parameters
    problems = []
    for arg, (group, name) in mapping.items():
        if arg not in params:
            problems.append('%s has no argument %s' % (func.__qualname__, arg))
        elif not _same(params[arg].default, group.default(name)):
            problems.append('%s(%s=%r): %s.%s is %r'
                            % (func.__qualname__, arg, params[arg].default, group.__name__,
                               name, group.default(name)))
    return problems


def test_core_function_defaults_match_the_settings():
    problems = []
    for func, mapping in _core_functions():
        problems += compare_signature(func, mapping)
    from continuousflex_geodl.core.landscape import paths
    for func, kind in ((paths.pca_path, 'pca'), (paths.density_path, 'density')):
        if inspect.signature(func).parameters['n_points'].default != S.PATH_POINTS[kind]:
            problems.append('%s n_points != PATH_POINTS[%r]' % (func.__name__, kind))
    assert problems == []


def test_core_tables_and_constants_are_the_settings():
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.core import engine, simulate
    from continuousflex_geodl.core.landscape import density, embedding
    from continuousflex_geodl.core.models.flexmodel import MODEL_DEFAULTS
    assert engine.TRAIN_DEFAULTS == T.defaults()
    assert MODEL_DEFAULTS == M.defaults()
    assert list(simulate.MOTIONS) == const.MOTIONS == S.Motion.values()
    assert list(simulate.POPULATIONS) == const.POPULATIONS == S.Population.values()
    assert const.PRIORS == S.Prior.values()
    assert const.ENCODER_INPUTS == S.EncoderInputs.values()
    assert const.PATH_KINDS == S.PathKind.values()
    assert const.EMBEDDINGS == list(embedding.METHODS) == S.EmbeddingMethod.values()
    assert const.STATE_METHODS == S.StateMethod.values()
    assert const.UNITS == S.EnergyUnit.values()
    assert density.DEFAULT_TEMPERATURE == L.temperature
    # every value of a choice list is accepted by the code that uses it
    for u in S.EnergyUnit.values():
        assert density.energy_scale(u, 300.0) > 0
    # the defaults are JSON values (config.json) and valid choices
    for group in S.GROUPS.values():
        json.dumps(group.defaults())
        for name in group.names():
            c = group.choices(name)
            if c is not None:
                assert group.default(name) in c.values(), (group, name)


def test_settings_and_constants_import_with_the_standard_library_only():
    code = ('import sys; import continuousflex_geodl.core.settings; '
            'import continuousflex_geodl.constants; '
            'heavy = sorted(m for m in sys.modules if m.split(".")[0] in '
            '("numpy", "torch", "pyworkflow", "pwem", "scipy")); print(heavy)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == '[]'


def test_choice_enums():
    assert S.Prior.GMM == 'gmm' and str(S.Prior.GMM) == 'gmm'
    assert json.dumps({'p': S.Prior.GAUSSIAN}) == '{"p": "gaussian"}'
    assert S.Prior.parse('GMM') is S.Prior.GMM
    assert S.PathKind.index('pca') == 2 and S.PathKind.at(2) == 'pca'
    assert S.Prior.labels()[0].startswith('gmm')
    with pytest.raises(ValueError, match="Unknown path kind 'line': use density, ridgeline"):
        S.PathKind.parse('line')


# ------------------------------------------------------------ Scipion forms --
#: protocol -> {form parameter: (settings group, setting)}
FORM_SETTINGS = {
    'GeoDLProtTrain': dict(
        zdim=(M, 'zdim'), prior=(M, 'prior'), nmaModes=(M, 'nma_modes'),
        nAtoms=(R, 'n_atoms'), refinePoses=(M, 'refine_poses'),
        poseRotSd=(M, 'pose_rot_sd'), poseShiftSd=(M, 'pose_shift_sd'),
        learnAmplitudes=(M, 'learn_amplitudes'),
        encoderInputs=(M, 'encoder_inputs'), epochs=(T, 'epochs'),
        batchSize=(T, 'batch_size'), learningRate=(T, 'lr'), beta=(T, 'beta'),
        timeLimit=(T, 'time_limit'), seed=(M, 'seed'), trainBox=(T, 'train_box')),
    'GeoDLProtPredict': dict(refineSteps=(I, 'refine_steps'), batchSize=(I, 'batch_size'),
                             ignoreRefinedPoses=(I, 'ignore_refined_poses')),
    'GeoDLProtSimulate': dict(
        nParticles=(SIM, 'n_particles'), box=(SIM, 'box'), apix=(SIM, 'apix'),
        snr=(SIM, 'snr'), motion=(SIM, 'motion'), population=(SIM, 'population'),
        seed=(SIM, 'seed')),
    'GeoDLProtLandscape': dict(
        embedding=(L, 'embedding'), nStates=(L, 'n_states'), stateMethod=(L, 'method'),
        barrier=(L, 'barrier'), minPopulation=(L, 'min_population'), units=(L, 'units'),
        temperature=(L, 'temperature'), bootstrap=(L, 'bootstrap'),
        feBootstrap=(L, 'fe_bootstrap'), seed=(L, 'seed'), kernel=(L, 'kernel')),
    'GeoDLProtStructures': dict(pathKind=(P, 'kind'), nPoints=(P, 'n_points')),
    'GeoDLProtCompareLandscapes': dict(k=(D, 'k')),
    'GeoDLProtPoses': dict(
        angularStep=(S.PoseSettings, 'angular_step'), finalStep=(S.PoseSettings, 'final_step'),
        candidates=(S.PoseSettings, 'candidates'), maxShift=(S.PoseSettings, 'max_shift'),
        resolution=(S.PoseSettings, 'resolution'), nAtoms=(R, 'n_atoms'),
        modelRounds=(S.PoseSettings, 'model_rounds'), roundEpochs=(T, 'epochs'),
        localStep=(S.PoseSettings, 'local_step'), rounds=(S.PoseSettings, 'rounds'),
        ignoreRefinedPoses=(I, 'ignore_refined_poses')),
    'GeoDLProtValidate': dict(
        zdim=(M, 'zdim'), prior=(M, 'prior'), nmaModes=(M, 'nma_modes'), nAtoms=(R, 'n_atoms'),
        epochs=(T, 'epochs'), batchSize=(T, 'batch_size'), learningRate=(T, 'lr'),
        beta=(T, 'beta'), seed=(M, 'seed'), splitSeed=(S.ValidateSettings, 'split_seed'),
        align=(S.ValidateSettings, 'align'), pathPoints=(S.ValidateSettings, 'path_points'),
        refineSteps=(I, 'refine_steps'), nStates=(L, 'n_states'), bootstrap=(L, 'bootstrap'),
        feBootstrap=(L, 'fe_bootstrap')),
}
#: form parameters that are not settings (inputs, GUI-only choices)
FORM_NOT_SETTINGS = {
    '*': {'runName', 'runMode', 'hostName', 'numberOfThreads', 'numberOfMpi', 'useGpu',
          'gpuList', 'queueParams', '_useQueue', '_queueParams'},
    'GeoDLProtTrain': {'allAtoms'},
    'GeoDLProtLandscape': {'source', 'attrName', 'xmdFile', 'xmdLabel', 'writeVolumes',
                           'usePrior'},
    'GeoDLProtStructures': {'pathType', 'points', 'startPoint', 'endPoint', 'fromState',
                            'toState', 'writeVolumes'},
    'GeoDLProtSubset': {'selection', 'states', 'xmin', 'xmax', 'ymin', 'ymax', 'polygon',
                        'maxDG', 'center', 'radius', 'idsFile'},
    'GeoDLProtCompareLandscapes': {'sourceA', 'attrA', 'sourceB', 'attrB', 'gtAttr'},
    'GeoDLProtHemnmaToFlex': {'source', 'attrName', 'xmdFile', 'xmdLabel'},
    'GeoDLProtPoses': {'mode'},
}


def _scipion():
    from continuousflex_geodl.tests import scipion_env
    scipion_env.configure()
    reason = scipion_env.skip_reason()
    if reason:
        pytest.skip(reason)
    import pyworkflow.protocol.params as params
    import continuousflex_geodl.protocols as prots
    return params, prots


def _form_value(params, param):
    """The form default as a Python value (Scipion stores it as text)."""
    text = param.default.get() if param.default is not None else None
    if text is None:
        return None
    if isinstance(param, params.BooleanParam):
        return str(text) == 'True'
    if isinstance(param, (params.IntParam, params.EnumParam)):
        return int(text)
    if isinstance(param, params.FloatParam):
        return float(text)
    return text


def compare_form(prot):
    """Differences between the form of protocol instance ``prot`` and the settings."""
    params, _ = _scipion()
    name = type(prot).__name__
    mapping = FORM_SETTINGS.get(name, {})
    skip = FORM_NOT_SETTINGS['*'] | FORM_NOT_SETTINGS.get(name, set())
    problems, seen = [], set()
    for pname, param in prot.getDefinition().iterAllParams():
        if isinstance(param, (params.PointerParam, params.MultiPointerParam, params.Line,
                              params.Group)) or pname in skip:
            continue
        seen.add(pname)
        if pname not in mapping:
            problems.append('%s.%s: not a setting and not listed as GUI-only (default %r)'
                            % (name, pname, _form_value(params, param)))
            continue
        group, setting = mapping[pname]
        want = group.default(setting)
        got = _form_value(params, param)
        choices = group.choices(setting)
        if isinstance(param, params.EnumParam):
            if choices is None or list(param.choices) != choices.labels():
                problems.append('%s.%s: choices %r, %s.%s has %r'
                                % (name, pname, param.choices, group.__name__, setting,
                                   None if choices is None else choices.labels()))
            elif choices.at(got) != want:
                problems.append('%s.%s: default %r, %s.%s is %r'
                                % (name, pname, choices.at(got), group.__name__, setting,
                                   want))
            continue
        if want is None:  # unset in the core: 0 / empty in a form
            ok = got in (0, 0.0, '', None)
        else:
            ok = _same(got, want)
        if not ok:
            problems.append('%s.%s: default %r, %s.%s is %r'
                            % (name, pname, got, group.__name__, setting, want))
    for pname in set(mapping) - seen:
        problems.append('%s.%s: listed but not in the form' % (name, pname))
    return problems


def _protocols(prots):
    return {n: getattr(prots, n) for n in dir(prots)
            if n.startswith('GeoDLProt') and isinstance(getattr(prots, n), type)}


def test_every_scipion_form_default_and_choice_list_comes_from_the_settings(tmp_path,
                                                                          monkeypatch):
    _, prots = _scipion()
    monkeypatch.chdir(tmp_path)
    protocols = _protocols(prots)
    assert set(FORM_SETTINGS) <= set(protocols)
    problems = []
    for cls in protocols.values():
        problems += compare_form(cls())
    assert problems == []


def test_protocol_modules_do_not_import_torch():
    code = ('import sys; from continuousflex_geodl.tests import scipion_env; '
            'scipion_env.configure(); import continuousflex_geodl.protocols, '
            'continuousflex_geodl.core.settings; print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    if out.returncode != 0 and 'skip' in out.stderr.lower():
        pytest.skip(out.stderr)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == 'False'


# --------------------------------------------------- the checks really check --
def _new_differences(parser, baseline):
    return [d for d in compare_cli(parser) if d not in baseline]


def test_a_changed_cli_default_is_reported():
    parser = build_parser()
    baseline = compare_cli(parser)  # [] when the test above passes
    p = dict(_commands(parser))[('train',)]
    beta = [a for a in p._actions if '--beta' in a.option_strings][0]
    beta.default = 0.125
    assert _new_differences(parser, baseline) == [
        'train --beta: default 0.125, TrainSettings.beta is 1.0']
    # a default typed in a command instead of taken from the settings
    dict(_commands(parser))[('infer',)].add_argument('--refine-momentum', type=float,
                                                     default=0.9)
    assert _new_differences(parser, baseline)[1:] == [
        'infer --refine-momentum: default 0.9 / choices None typed in the command, not '
        'taken from core.settings']


def test_a_changed_setting_is_reported_everywhere(monkeypatch):
    """A setting changed in settings.py alone: the CLI built before it and
    the core signature both disagree now."""
    parser = build_parser()
    baseline = compare_cli(parser)
    field = S.InferSettings.field_info('refine_lr')
    monkeypatch.setattr(field, 'default', 0.05)
    assert _new_differences(parser, baseline) == [
        'infer --refine-lr: default 0.1, InferSettings.refine_lr is 0.05']
    from continuousflex_geodl.core.inference import refine_latents
    assert compare_signature(refine_latents, {'lr': (I, 'refine_lr')}) == [
        'refine_latents(lr=0.1): InferSettings.refine_lr is 0.05']


def test_changed_choices_are_reported():
    parser = build_parser()
    baseline = compare_cli(parser)
    p = dict(_commands(parser))[('landscape', 'path')]
    kind = [a for a in p._actions if '--kind' in a.option_strings][0]
    kind.choices = ['pca', 'density', 'ridgeline']  # same values, other order
    assert _new_differences(parser, baseline) == [
        "landscape path --kind: choices ['pca', 'density', 'ridgeline'], PathSettings.kind "
        "has ['density', 'ridgeline', 'pca']"]


def test_a_changed_form_default_is_reported(tmp_path, monkeypatch):
    _, prots = _scipion()
    monkeypatch.chdir(tmp_path)
    prot = prots.GeoDLProtTrain()
    baseline = compare_form(prot)  # [] when the form test passes
    prot.getDefinition().getParam('beta').default.set(0.125)
    prot.getDefinition().getParam('prior').default.set(0)
    assert sorted(d for d in compare_form(prot) if d not in baseline) == [
        "GeoDLProtTrain.beta: default 0.125, TrainSettings.beta is 1.0",
        "GeoDLProtTrain.prior: default 'gmm', ModelSettings.prior is 'gaussian'"]


# -------------------------------------------------------------- config.json --
def _old_config():
    """config.json as written before provenance was recorded (schema 1), by a
    version without the 'ctf' setting."""
    cfg = dict(M.defaults(), **T.defaults())
    cfg.update(zdim=2, box=32, apix=4.0, sigma=3.0, n_particles=100, encoder_inputs='image')
    del cfg['ctf']
    return cfg


def test_migrate_an_old_config():
    old = _old_config()
    snapshot = json.loads(json.dumps(old))
    new = S.migrate_config(old)
    assert old == snapshot  # input untouched
    assert new['config_schema'] == S.CONFIG_SCHEMA
    assert new['package_version'] == 'unknown' and new['command_line'] is None
    assert new['ctf'] is True  # what models of that version did
    assert S.settings_only(new) == dict(old, ctf=True)
    from continuousflex_geodl.core.training.config import split_settings
    model_cfg, train_cfg = split_settings(S.settings_only(new))
    assert model_cfg['zdim'] == 2 and train_cfg['beta'] == old['beta']
    # current configs pass unchanged
    assert S.migrate_config(new) == new


def test_migrate_renamed_keys(monkeypatch):
    monkeypatch.setattr(S, 'RENAMED_KEYS', {'latent_dim': 'zdim'})
    old = dict(_old_config(), latent_dim=6)
    del old['zdim']
    new = S.migrate_config(old)
    assert new['zdim'] == 6 and 'latent_dim' not in new
    with pytest.raises(ValueError, match="both 'latent_dim' and its new name 'zdim'"):
        S.migrate_config(dict(old, zdim=3))


def test_migrate_refuses_newer_or_damaged_configs():
    with pytest.raises(ValueError, match='newer continuousflex_geodl'):
        S.migrate_config(dict(_old_config(), config_schema=S.CONFIG_SCHEMA + 1,
                              package_version='9.0'))
    with pytest.raises(ValueError, match='JSON object'):
        S.migrate_config([1, 2])
    with pytest.raises(ValueError, match='Invalid config_schema'):
        S.migrate_config({'config_schema': 'two'})


def test_provenance_round_trip_through_the_model_folder(tmp_path):
    from continuousflex_geodl import __version__
    from continuousflex_geodl.core.artifacts import ModelDir
    md = ModelDir(tmp_path / 'model')
    os.makedirs(md.path)
    argv = ['continuousflex-geodl', 'train', '--particles', 'p.star', '--beta', '1']
    md.write_config(_old_config(), argv)
    with open(md.config_path) as f:
        raw = json.load(f)
    assert raw['package_version'] == __version__ and raw['command_line'] == argv
    assert raw['config_schema'] == S.CONFIG_SCHEMA
    assert md.read_config() == raw
    # default command line: this process's
    assert S.with_provenance({})['command_line'] == sys.argv


def test_an_old_model_folder_still_loads(tmp_path):
    """A model folder whose config.json predates the provenance keys loads
    through migrate_config and gives the same network as the current format."""
    import numpy as np
    import torch
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.inference import load_model
    from continuousflex_geodl.core.models.flexmodel import build_model
    rng = np.random.default_rng(0)
    pos = rng.normal(0, 8, (30, 3)).astype(np.float32)
    amp = np.ones(30, np.float32)
    old = _old_config()
    model = build_model({k: v for k, v in old.items() if k in M.defaults()}, pos, amp)
    md = ModelDir(tmp_path / 'old')
    os.makedirs(md.path)
    with open(md.config_path, 'w') as f:  # as the old engine wrote it
        json.dump(old, f)
    md.write_reference(**model.arrays())
    md.write_weights(model.state_dict())
    loaded = load_model(md.path)
    assert loaded.config['ctf'] is True and loaded.zdim == 2
    z = torch.zeros(1, 2)
    with torch.no_grad():
        a, _ = model.decode(z)
        b, _ = loaded.decode(z)
    assert torch.equal(a, b)

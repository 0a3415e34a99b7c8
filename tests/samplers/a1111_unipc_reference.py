"""A1111's "UniPC" (stable-diffusion-webui 1.10: ``modules/sd_samplers_timesteps_impl.py: unipc`` driving
``modules/models/diffusion/uni_pc/uni_pc.py``) restated in its own VP variables, as an independent reference for
``nanoldm.samplers.unipc``.

Only the path A1111 takes is kept: ``NoiseScheduleVP('discrete', alphas_cumprod=...)``, ``UniPCCFG`` (the model
is fed (t - 1/N) * 1000 and returns eps; ``predict_x0=True``, no thresholding), ``multistep_uni_pc_bh_update``
(bh1 / bh2) and ``sample(method="multistep", skip_type="time_uniform")``. Everything runs in float32 as in A1111
(float32 ``alphas_cumprod``, float32 time grid); ``eps_fn(x_vp, t_input) -> eps`` with t_input of shape (B,).
"""
from __future__ import annotations

import torch


def interpolate_fn(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through keypoints (xp ascending), the outer segments extended beyond them.
    Shapes: x (n, 1), xp (1, K), yp (1, K) -> (n, 1)."""
    xp, yp = xp[0], yp[0]
    K = xp.shape[0]
    start = (torch.searchsorted(xp, x[:, 0].contiguous()) - 1).clamp(0, K - 2)
    start_x, end_x, start_y, end_y = xp[start], xp[start + 1], yp[start], yp[start + 1]
    return (start_y + (x[:, 0] - start_x) * (end_y - start_y) / (end_x - start_x))[:, None]


class NoiseScheduleVP:
    """The 'discrete' schedule: t_i = (i + 1) / N, log alpha piecewise linear in t."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(log_alphas)
        self.T = 1.
        self.t_array = torch.linspace(0., 1., self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1))

    def marginal_log_mean_coeff(self, t):
        return interpolate_fn(t.reshape((-1, 1)), self.t_array, self.log_alpha_array).reshape((-1))

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1. - torch.exp(2. * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1. - torch.exp(2. * log_mean_coeff))
        return log_mean_coeff - log_std


def expand_dims(v, dims):
    return v[(...,) + (None,) * (dims - 1)]


class UniPC:
    """``UniPCCFG``: predict_x0=True, thresholding=False; ``after_update(x, model_x)`` is A1111's callback hook."""

    def __init__(self, eps_fn, noise_schedule: NoiseScheduleVP, variant: str = "bh1", after_update=None):
        self.eps_fn = eps_fn
        self.noise_schedule = noise_schedule
        self.variant = variant
        self.after_update = after_update

    def get_model_input_time(self, t_continuous):
        return (t_continuous - 1. / self.noise_schedule.total_N) * 1000.

    def model(self, x, t):
        return self.eps_fn(x, self.get_model_input_time(t))

    def model_fn(self, x, t):  # data_prediction_fn
        noise = self.model(x, t)
        dims = x.dim()
        alpha_t, sigma_t = self.noise_schedule.marginal_alpha(t), self.noise_schedule.marginal_std(t)
        return (x - expand_dims(sigma_t, dims) * noise) / expand_dims(alpha_t, dims)

    def multistep_uni_pc_bh_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        dims = x.dim()

        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0

        rks, D1s = [], []
        for i in range(1, order):
            lambda_prev_i = ns.marginal_lambda(t_prev_list[-(i + 1)])
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks.append(rk)
            D1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.)
        rks = torch.tensor(rks)

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        if self.variant == 'bh1':
            B_h = hh
        elif self.variant == 'bh2':
            B_h = torch.expm1(hh)
        else:
            raise NotImplementedError()
        R, b = [], []
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= (i + 1)
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)
        b = torch.tensor(b)

        use_predictor = len(D1s) > 0
        if use_predictor:
            D1s = torch.stack(D1s, dim=1)  # (B, K, C, H, W)
            rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None
        if use_corrector:
            rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(R, b)

        model_t = None
        x_t_ = expand_dims(sigma_t / sigma_prev_0, dims) * x - expand_dims(alpha_t * h_phi_1, dims) * model_prev_0
        pred_res = torch.einsum('k,bkchw->bchw', rhos_p, D1s) if use_predictor else 0
        x_t = x_t_ - expand_dims(alpha_t * B_h, dims) * pred_res
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            corr_res = torch.einsum('k,bkchw->bchw', rhos_c[:-1], D1s) if D1s is not None else 0
            D1_t = model_t - model_prev_0
            x_t = x_t_ - expand_dims(alpha_t * B_h, dims) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(self, x, steps=20, t_start=None, order=3, lower_order_final=True, timesteps=None):
        """``timesteps``: a ready grid (ComfyUI passes one); by default A1111's 'time_uniform' one."""
        if timesteps is None:
            t_0 = 1. / self.noise_schedule.total_N
            t_T = self.noise_schedule.T if t_start is None else t_start
            timesteps = torch.linspace(t_T, t_0, steps + 1)  # skip_type 'time_uniform'
        steps = len(timesteps) - 1
        assert steps >= order, "UniPC order must be < sampling steps"
        with torch.no_grad():
            vec_t = timesteps[0].expand((x.shape[0]))
            model_prev_list = [self.model_fn(x, vec_t)]
            t_prev_list = [vec_t]
            for init_order in range(1, order):  # warm-up with lower orders, corrector on
                vec_t = timesteps[init_order].expand(x.shape[0])
                x, model_x = self.multistep_uni_pc_bh_update(x, model_prev_list, t_prev_list, vec_t, init_order,
                                                             use_corrector=True)
                if model_x is None:
                    model_x = self.model_fn(x, vec_t)
                if self.after_update is not None:
                    self.after_update(x, model_x)
                model_prev_list.append(model_x)
                t_prev_list.append(vec_t)
            for step in range(order, steps + 1):
                vec_t = timesteps[step].expand(x.shape[0])
                step_order = min(order, steps + 1 - step) if lower_order_final else order
                use_corrector = step != steps  # no corrector on the last step
                x, model_x = self.multistep_uni_pc_bh_update(x, model_prev_list, t_prev_list, vec_t, step_order,
                                                             use_corrector=use_corrector)
                if self.after_update is not None:
                    self.after_update(x, model_x)
                for i in range(order - 1):
                    t_prev_list[i] = t_prev_list[i + 1]
                    model_prev_list[i] = model_prev_list[i + 1]
                t_prev_list[-1] = vec_t
                if step < steps:
                    if model_x is None:
                        model_x = self.model_fn(x, vec_t)
                    model_prev_list[-1] = model_x
        return x


def a1111_unipc(eps_fn, alphas_cumprod: torch.Tensor, x: torch.Tensor, steps: int, *, variant: str = "bh1",
                order: int = 3, lower_order_final: bool = True, t_start=None, after_update=None) -> torch.Tensor:
    """``sd_samplers_timesteps_impl.unipc`` with A1111's options: the VP latent x at t = 1 (or ``t_start``) ->
    the VP latent at t_0 = 1 / N. img2img: t_start = timesteps[-1] / 1000 + 1 / 1000 of the CompVis timesteps
    ``timesteps[:t_enc]``, steps = t_enc. Shapes: x (B, C, H, W) -> (B, C, H, W)."""
    ns = NoiseScheduleVP(alphas_cumprod)
    sampler = UniPC(eps_fn, ns, variant=variant, after_update=after_update)
    return sampler.sample(x, steps=steps, t_start=t_start, order=order, lower_order_final=lower_order_final)

/* kern_impl.h - the body of every kernel of kern.h, written once over a small vector macro
 * layer and included by kern.c once per instruction set (scalar, AVX2, AVX-512).
 *
 * The includer defines: KERN_W (lanes), KF(name) (the name with the set's suffix), VT (the
 * vector type), VLD/VST (unaligned load/store), VSET (broadcast), VZERO, VADD, VSUB, VMUL,
 * VDIV, VFMA(a, b, c) = a * b + c, VMAX, VSQRT, VHSUM, VHMAX, VEXP (exp, see kern.h).
 * Tails shorter than KERN_W run the same formulas in scalar code.
 * Not a header of its own: no include guard on purpose.
 */

static void KF(rmsnorm)(float *out, float *rstd, const float *x, const float *w, int N, int D,
                        float eps)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *o = out + (size_t)n * D;
        VT acc = VZERO;
        int i = 0;
        for (; i + KERN_W <= D; i += KERN_W) {
            VT a = VLD(xr + i);
            acc = VFMA(a, a, acc);
        }
        float ss = VHSUM(acc);
        for (; i < D; i++)
            ss += xr[i] * xr[i];
        float r = (float)(1.0 / sqrt((double)ss / D + (double)eps));
        if (rstd)
            rstd[n] = r;
        VT vr = VSET(r);
        for (i = 0; i + KERN_W <= D; i += KERN_W)
            VST(o + i, VMUL(VMUL(VLD(xr + i), vr), VLD(w + i)));
        for (; i < D; i++)
            o[i] = xr[i] * r * w[i];
    }
}

static void KF(rmsnorm_bwd)(float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int N, int D)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D, *dy = dout + (size_t)n * D;
        float *dxr = dx + (size_t)n * D;
        float r = rstd[n];
        VT vr = VSET(r), acc = VZERO;
        int i = 0;
        for (; i + KERN_W <= D; i += KERN_W) {
            VT vdy = VLD(dy + i), vx = VLD(xr + i);
            acc = VFMA(VMUL(vdy, VLD(w + i)), vx, acc);
            VST(dw + i, VFMA(VMUL(vdy, vx), vr, VLD(dw + i)));
        }
        float dot = VHSUM(acc);
        for (; i < D; i++) {
            dot += dy[i] * w[i] * xr[i];
            dw[i] += dy[i] * xr[i] * r;
        }
        float k = (float)((double)dot * r * r * r / D);
        VT vk = VSET(k);
        for (i = 0; i + KERN_W <= D; i += KERN_W) {
            VT t = VSUB(VMUL(VMUL(vr, VLD(dy + i)), VLD(w + i)), VMUL(vk, VLD(xr + i)));
            VST(dxr + i, VADD(VLD(dxr + i), t));
        }
        for (; i < D; i++)
            dxr[i] += r * dy[i] * w[i] - k * xr[i];
    }
}

static void KF(swiglu)(float *h, const float *gate, const float *up, size_t n)
{
    size_t i = 0;
    VT one = VSET(1.0f), zero = VZERO;
    for (; i + KERN_W <= n; i += KERN_W) {
        VT g = VLD(gate + i);
        VT e = VEXP(VSUB(zero, g));
        VST(h + i, VMUL(VDIV(g, VADD(one, e)), VLD(up + i)));
    }
    for (; i < n; i++)
        h[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void KF(swiglu_bwd)(float *dgate, float *dup, const float *dh, const float *gate,
                           const float *up, size_t n)
{
    size_t i = 0;
    VT one = VSET(1.0f), zero = VZERO;
    for (; i + KERN_W <= n; i += KERN_W) {
        VT g = VLD(gate + i), d = VLD(dh + i);
        VT s = VDIV(one, VADD(one, VEXP(VSUB(zero, g))));
        VT ds = VMUL(s, VFMA(g, VSUB(one, s), one)); /* s (1 + g (1 - s)) */
        VST(dup + i, VMUL(d, VMUL(g, s)));
        VST(dgate + i, VMUL(VMUL(d, VLD(up + i)), ds));
    }
    for (; i < n; i++) {
        float g = gate[i], d = dh[i];
        float s = 1.0f / (1.0f + expf(-g));
        dup[i] = d * (g * s);
        dgate[i] = d * up[i] * (s * (1.0f + g * (1.0f - s)));
    }
}

static void KF(rope)(float *x, int n_vec, int hd, const float *cs, const float *sn, int inverse)
{
    int half = hd / 2;
    VT sign = VSET(inverse ? -1.0f : 1.0f);
    float fs = inverse ? -1.0f : 1.0f;
    for (int k = 0; k < n_vec; k++) {
        float *v = x + (size_t)k * hd;
        int i = 0;
        for (; i + KERN_W <= half; i += KERN_W) {
            VT a = VLD(v + i), b = VLD(v + i + half), c = VLD(cs + i), s = VMUL(VLD(sn + i), sign);
            VST(v + i, VSUB(VMUL(a, c), VMUL(b, s)));
            VST(v + i + half, VADD(VMUL(b, c), VMUL(a, s)));
        }
        for (; i < half; i++) {
            float a = v[i], b = v[i + half], s = sn[i] * fs;
            v[i] = a * cs[i] - b * s;
            v[i + half] = b * cs[i] + a * s;
        }
    }
}

static void KF(softmax_row)(float *row, int len, int width)
{
    int j = 0;
    float mx = row[0];
    if (len >= KERN_W) {
        VT vm = VLD(row);
        for (j = KERN_W; j + KERN_W <= len; j += KERN_W)
            vm = VMAX(vm, VLD(row + j));
        mx = VHMAX(vm);
    }
    for (; j < len; j++)
        mx = row[j] > mx ? row[j] : mx;
    VT vmx = VSET(mx), acc = VZERO;
    for (j = 0; j + KERN_W <= len; j += KERN_W) {
        VT e = VEXP(VSUB(VLD(row + j), vmx));
        VST(row + j, e);
        acc = VADD(acc, e);
    }
    float sum = VHSUM(acc);
    for (; j < len; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    float inv = 1.0f / sum;
    VT vi = VSET(inv);
    for (j = 0; j + KERN_W <= len; j += KERN_W)
        VST(row + j, VMUL(VLD(row + j), vi));
    for (; j < len; j++)
        row[j] *= inv;
    for (j = len; j < width; j++)
        row[j] = 0.0f;
}

static void KF(softmax_bwd_row)(float *dp, const float *p, int len, int width)
{
    VT acc = VZERO;
    int j = 0;
    for (; j + KERN_W <= len; j += KERN_W)
        acc = VFMA(VLD(p + j), VLD(dp + j), acc);
    float dot = VHSUM(acc);
    for (; j < len; j++)
        dot += p[j] * dp[j];
    VT vd = VSET(dot);
    for (j = 0; j + KERN_W <= len; j += KERN_W)
        VST(dp + j, VMUL(VLD(p + j), VSUB(VLD(dp + j), vd)));
    for (; j < len; j++)
        dp[j] = p[j] * (dp[j] - dot);
    for (j = len; j < width; j++)
        dp[j] = 0.0f;
}

static float KF(logsumexp)(const float *x, int n, float scale)
{
    int j = 0;
    float mx = x[0] * scale;
    VT vs = VSET(scale);
    if (n >= KERN_W) {
        VT vm = VLD(x);
        for (j = KERN_W; j + KERN_W <= n; j += KERN_W)
            vm = VMAX(vm, VLD(x + j));
        mx = VHMAX(vm) * scale;
    }
    for (; j < n; j++)
        mx = x[j] * scale > mx ? x[j] * scale : mx;
    VT vmx = VSET(mx), acc = VZERO;
    for (j = 0; j + KERN_W <= n; j += KERN_W)
        acc = VADD(acc, VEXP(VSUB(VMUL(VLD(x + j), vs), vmx)));
    float sum = VHSUM(acc);
    for (; j < n; j++)
        sum += expf(x[j] * scale - mx);
    return mx + logf(sum);
}

static void KF(adamw)(float *p, float *g, float *m, float *v, size_t n, const kern_adamw_k *k)
{
    size_t i = 0;
    int scale_g = k->gscale != 1.0f;
    VT b1 = VSET(k->b1), omb1 = VSET(k->omb1), b2 = VSET(k->b2), omb2 = VSET(k->omb2),
       gs = VSET(k->gscale), keep = VSET(k->keep), step = VSET(k->step),
       isbc2 = VSET(k->isbc2), eps = VSET(k->eps);
    for (; i + KERN_W <= n; i += KERN_W) {
        VT gi = VLD(g + i);
        if (scale_g) {
            gi = VMUL(gi, gs);
            VST(g + i, gi);
        }
        VT mi = VFMA(b1, VLD(m + i), VMUL(omb1, gi));
        VT vi = VFMA(b2, VLD(v + i), VMUL(omb2, VMUL(gi, gi)));
        VST(m + i, mi);
        VST(v + i, vi);
        VT den = VFMA(VSQRT(vi), isbc2, eps);
        VST(p + i, VSUB(VMUL(VLD(p + i), keep), VDIV(VMUL(step, mi), den)));
    }
    for (; i < n; i++) {
        float gi = g[i];
        if (scale_g)
            g[i] = gi = gi * k->gscale;
        float mi = k->b1 * m[i] + k->omb1 * gi;
        float vi = k->b2 * v[i] + k->omb2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * k->keep - k->step * mi / (sqrtf(vi) * k->isbc2 + k->eps);
    }
}

static float KF(max_scaled)(const float *x, int n, float scale)
{
    int j = 0;
    float mx = x[0];
    if (n >= KERN_W) {
        VT vm = VLD(x);
        for (j = KERN_W; j + KERN_W <= n; j += KERN_W)
            vm = VMAX(vm, VLD(x + j));
        mx = VHMAX(vm);
    }
    for (; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    return mx * scale;
}

static void KF(softmax_grad)(float *d, const float *x, int n, float scale, float lse, float a,
                             float b)
{
    int j = 0;
    VT vs = VSET(scale), vl = VSET(lse), va = VSET(a), vb = VSET(b);
    for (; j + KERN_W <= n; j += KERN_W) {
        VT lp = VSUB(VMUL(VLD(x + j), vs), vl);
        VT p = VEXP(lp);
        VST(d + j, VFMA(VMUL(vs, p), VFMA(vb, lp, va), VLD(d + j)));
    }
    for (; j < n; j++) {
        float lp = x[j] * scale - lse;
        d[j] += scale * expf(lp) * (a + b * lp);
    }
}

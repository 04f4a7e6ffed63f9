# The per-agent-step loop of an emulator: act `skip` frames, read the last two screens, run the
# palette-index kernel. It is the env's hot path, so it runs here rather than as Python bytecode;
# the emulator itself is reached only through the callables it is given (ale.act and friends),
# so this module knows nothing of ALE.

cimport numpy as cnp

cnp.import_array()


cdef class FrameSkip:
    """Steps an emulator ``skip`` frames per agent step into a FramePreprocessor's frame stack.

    ``FrameSkip(kernel, act, game_over, get_screen, get_rgb, skip, stack)``:

    - ``act(action)`` emulates one frame and returns its reward (``ale.act``);
    - ``game_over()`` says whether the game ended (``ale.game_over``);
    - ``get_screen(frame)`` fills an (H, W) uint8 frame with the screen's palette indices
      (``ale.getScreen``); ``get_rgb()`` returns the same screen in RGB (``ale.getScreenRGB``),
      called only when the screen shows an index whose colour the kernel has not learned;
    - ``stack``: the acting stack (k, H', W') uint8, oldest frame first, shifted by every step
      (``bind`` gives it another one).

    ``step(action, out=None)`` acts until ``skip`` frames are done or the game ends, reads the
    screens of the last two frames into the kernel's index frames 0 and 1 (only the newest, maxed
    with itself, when fewer than two frames were acted), and writes their preprocessed max into
    the stack (and into ``out`` when given: a replay slot). It returns ``(reward summed over the
    frames, frames acted, game over)``. ``read(slot)`` reads the current screen into index frame
    ``slot`` (learning new colours), for a reset's first frame.
    """

    cdef FramePreprocessor kernel
    cdef object act, game_over, get_screen, get_rgb
    cdef readonly int skip
    cdef object _stack          # the bound stack (kept alive while its pointer is used)
    cdef uint8_t* stack_data
    cdef Py_ssize_t stack_len
    cdef Py_ssize_t frame_size  # bytes of one output frame

    def __init__(self, FramePreprocessor kernel not None, act, game_over, get_screen, get_rgb,
                 skip, stack):
        for name, fn in (("act", act), ("game_over", game_over), ("get_screen", get_screen),
                         ("get_rgb", get_rgb)):
            if not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
        if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or skip < 1:
            raise ValueError(f"skip must be an int >= 1 (emulator frames per step), got {skip!r}")
        self.kernel = kernel
        self.act, self.game_over = act, game_over
        self.get_screen, self.get_rgb = get_screen, get_rgb
        self.skip = skip
        self.frame_size = kernel.out_height * kernel.out_width
        self.bind(stack)

    def bind(self, stack):
        """Shift and write ``stack`` from now on (a writable C-contiguous (k, H', W') uint8
        array; the caller keeps using it as its acting stack)."""
        cdef uint8_t[:, :, ::1] view = _stack_view(stack, self.kernel.out_height,
                                                   self.kernel.out_width)
        self._stack = stack
        self.stack_data = &view[0, 0, 0]
        self.stack_len = view.shape[0]

    def read(self, slot):
        """Read the current screen into the kernel's index frame ``slot`` (0 or 1), learning the
        colours of indices it has not seen."""
        self._read(self.kernel._slot(slot, "slot"))

    cdef int _read(self, int s) except -1:
        if not self.kernel._fill(s, self.get_screen):
            self.kernel.learn_palette(s, self.get_rgb())
        return 0

    def step(self, action, out=None):
        cdef double raw = 0.0
        cdef int i = 0, n = self.skip
        cdef bint over = False
        cdef int prev, missed
        cdef uint8_t* dst = NULL if out is None else self._out_data(out)
        act, game_over = self.act, self.game_over
        for i in range(n):
            raw += act(action)
            if game_over():
                over = True
                break
            if i == n - 2:
                self._read(0)
        prev = 1 if (n == 1 or i < n - 1) else 0
        if prev == 1:
            self._read(1)
        else:  # the newest screen's colour check is folded into the kernel's pass
            self.kernel.covered[1] = False
            self.get_screen(self.kernel._slots[1])
        with nogil:
            missed = self.kernel._indexed(prev, 1, dst, self.stack_data, self.stack_len)
        if missed:  # a colour not seen before: learn it from this (still current) screen
            self.kernel.learn_palette(1, self.get_rgb())
            with nogil:
                self.kernel._indexed(prev, 1, dst, self.stack_data, self.stack_len)
        return raw, i + 1, over

    cdef uint8_t* _out_data(self, out) except NULL:
        # A numpy array is checked through its header (the hot path); anything else through a
        # typed memoryview, which also makes the errors.
        cdef cnp.ndarray a
        cdef uint8_t* p
        cdef uint8_t* last
        cdef uint8_t[:, ::1] view
        cdef Py_ssize_t hw = self.frame_size
        if (type(out) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray> out) == cnp.NPY_UINT8
                and cnp.PyArray_NDIM(<cnp.ndarray> out) == 2
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> out)
                and cnp.PyArray_ISWRITEABLE(<cnp.ndarray> out)):
            a = <cnp.ndarray> out
            if a.shape[0] != self.kernel.out_height or a.shape[1] != self.kernel.out_width:
                _out_view(out, self.kernel.out_height, self.kernel.out_width)  # raises
            p = <uint8_t*> cnp.PyArray_DATA(a)
        else:
            view = _out_view(out, self.kernel.out_height, self.kernel.out_width)
            p = &view[0, 0]
        last = self.stack_data + (self.stack_len - 1) * hw
        if p != last and self.stack_data <= p < last + hw:
            raise ValueError("out must not be one of the stack's frames other than its last")
        return p

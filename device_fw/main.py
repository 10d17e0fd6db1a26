# Entry point of a onekey device, on the ESP32 and on the MicroPython unix port alike.
# Reads config.json from the working directory, picks the application by its "role" (the alarm
# button or the broadcast speaker) and the HAL ("esp32" or "sim"), and runs the application's
# tasks under asyncio.run with a supervisor and a global exception handler.
# Modules are imported one at a time with a collection in between: compiling a module from
# source needs a transient parse tree, and a small heap would fragment otherwise. Only the
# role's own modules are imported.
import gc
import sys

gc.collect()
import asyncio  # noqa: E402

gc.collect()
import okproto  # noqa: E402

gc.collect()
from time import ticks_diff, ticks_ms  # noqa: E402

from micropython import const  # noqa: E402

_STALL_MS = const(5000)  # the application's loop must run at least this often to feed the watchdog


def load_app(cfg: dict) -> tuple:
    # Imports the role's modules one at a time, in the order measured to leave the largest
    # free blocks behind; returns (application module, HAL object).
    gc.collect()
    if cfg["role"] == "speaker":
        # This order leaves the largest free blocks behind (measured on the unix port):
        # checking a broadcast frame needs a free block of 3.3 KB.
        hal = make_hal(cfg)
        gc.collect()
        import okmqtt  # noqa: F401

        gc.collect()
        import store  # noqa: F401

        gc.collect()
        import link  # noqa: F401

        gc.collect()
        # Compiled before playqueue and tts, which it imports: a module compiles before the
        # modules it imports run.
        import speaker

        gc.collect()
        return speaker, hal
    import okmqtt  # noqa: F401, F811

    gc.collect()
    import store  # noqa: F401, F811

    gc.collect()
    import presslogic  # noqa: F401

    gc.collect()
    import feedback  # noqa: F401

    gc.collect()
    import link  # noqa: F401, F811

    gc.collect()
    import button

    gc.collect()
    return button, make_hal(cfg)


def tasks(role: str, app) -> tuple:
    # (name, coroutine function) of every task the application runs.
    if role == "speaker":
        return (("ticker", app.ticker), ("player", app.player), ("link", app.link.run))
    if app.power is not None:
        return (
            ("buttons", app.buttons),
            ("feedback", app.fb.run),
            ("link", app.link.run),
            ("power", app.power.run),
        )
    return (("buttons", app.buttons), ("feedback", app.fb.run), ("link", app.link.run))


def make_hal(cfg: dict):
    gc.collect()
    if cfg["hal"] == "sim":
        from hal_sim import SimHal

        return SimHal(cfg)
    from hal_esp32 import Esp32Hal

    return Esp32Hal(cfg)


async def supervise(app, log, name: str, make) -> None:
    # Restarts a task that died of an unexpected error; logs it and counts it.
    while True:
        try:
            await make()
            log(name, "returned; restarting")
        except Exception as ex:  # the top-level supervisor: anything else would stop the device
            app.errors += 1
            log(name, "crashed:", type(ex).__name__, ex)
            sys.print_exception(ex)
        await asyncio.sleep_ms(1000)


async def run(cfg: dict, hal, mod) -> None:
    log = mod.log
    app = mod.App(cfg, hal)
    app.boot()

    def on_error(loop, context) -> None:
        app.errors += 1
        ex = context.get("exception")
        log("unhandled error in a task:", context.get("message"))
        if ex is not None:
            sys.print_exception(ex)

    asyncio.get_event_loop().set_exception_handler(on_error)
    for name, make in tasks(cfg["role"], app):
        asyncio.create_task(supervise(app, log, name, make))
    await hal.start(app)
    while True:
        # Feed the watchdog only while the application's loop is alive: a hung device restarts.
        if ticks_diff(ticks_ms(), app.alive) < _STALL_MS:
            hal.feed()
        gc.collect()  # little and often keeps a small heap from fragmenting
        await asyncio.sleep_ms(1000)


def read_config() -> dict:
    # config.py is needed at boot only: it is dropped afterwards, and its room goes to the
    # application.
    import config

    try:
        return config.load()
    except config.ConfigError as ex:
        print("config:", ex)
        sys.exit(2)
    finally:
        del sys.modules["config"]


def main() -> None:
    cfg = read_config()
    gc.collect()
    if cfg["role"] == "speaker":
        # Allocated now, while the heap has a free block this size; compiling the modules
        # leaves it in pieces.
        cfg["rx_buf"] = bytearray(okproto.MAX_BC_PAYLOAD + 64)  # speaker.RX_SIZE
    mod, hal = load_app(cfg)
    try:
        asyncio.run(run(cfg, hal, mod))
    except KeyboardInterrupt:
        pass
    except Exception as ex:  # last resort: log and restart the device
        print("fatal:", type(ex).__name__, ex)
        sys.print_exception(ex)
        if cfg["hal"] == "esp32":
            import machine

            machine.reset()
        sys.exit(1)
    finally:
        asyncio.new_event_loop()


main()

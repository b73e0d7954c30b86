"""`make demo`: a page to draw a digit on, answered as you draw, through predict's own preprocessing."""

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from mnist_pipeline import cli
from mnist_pipeline.data import preprocess
from mnist_pipeline.errors import ImageError
from mnist_pipeline.serving import inference

PAGE = Path(__file__).with_name("demo.html")  # HTML, CSS and script in one file: nothing fetched from elsewhere


def create_app(predict: inference.Predictor) -> FastAPI:
    app = FastAPI(title="Draw a digit", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(PAGE)

    @app.post("/predict")
    async def predict_drawing(request: Request) -> JSONResponse:
        """Body: the drawing as a PNG. Answer: the class, the 10 class probabilities, and the
        28x28 pixels the model saw; or, for a blank or unreadable image, 422 and the reason."""
        try:
            pixels = preprocess.from_bytes(await request.body())
        except ImageError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        # A few milliseconds of work for a drawing: not worth a thread of its own.
        p = predict(pixels[None, None])[0]
        return JSONResponse({"class": int(p.argmax()), "probabilities": p.tolist(), "pixels": pixels.round(3).tolist()})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    inference.add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5002)
    args = parser.parse_args(argv)
    return cli.run(lambda: _serve(args))


def _serve(args: argparse.Namespace) -> None:
    predict, _, about, _ = inference.from_options(args)
    print(f"demo: model {about}", flush=True)
    print(f"demo: draw a digit at http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(predict), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    raise SystemExit(main())

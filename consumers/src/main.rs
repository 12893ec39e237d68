#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

codigo_common::service_main!(
    "codigo-consumer",
    codigo_consumer::Config,
    codigo_consumer::Application
);
